"""A thin, retrying layer over the official (synchronous) ``kubernetes`` client.

Everything here runs in worker threads (the orchestrator calls it through ``asyncio.to_thread``). It speaks raw JSON
(``_preload_content=False``) so objects round-trip exactly as the API server sends them, and it is the one place
``ApiException`` and connection errors become domain errors:

- 409 (conflict), 429, 5xx and dropped connections: retried with jittered exponential backoff (``KubeRetryPolicy``);
- 403: ``PermissionDeniedError`` naming the verb and resource the Role must grant;
- 404 on read or delete: ``None`` / success (absent is fine);
- anything else (400, 422, …): ``OrchestrationError`` with the API server's message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from model_engine_server.domain.backoff import full_jitter
from model_engine_server.domain.exceptions import OrchestrationError, PermissionDeniedError

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
RETRYABLE_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class KubeRetryPolicy:
    attempts: int = 6
    base_delay: float = 0.25
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return full_jitter(attempt, self.base_delay, self.max_delay)


@dataclass(frozen=True)
class Resource:
    """One API kind the orchestrator touches; ``group`` is ``""`` for the core API."""

    kind: str
    group: str
    version: str
    plural: str
    api: str  # attribute of ``kubernetes.client``; "CustomObjectsApi" for CRDs
    suffix: str  # method suffix on that API, e.g. "namespaced_deployment"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as in RBAC messages and ``kubectl auth can-i``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = Resource("Deployment", "apps", "v1", "deployments", "AppsV1Api", "namespaced_deployment")
SERVICES = Resource("Service", "", "v1", "services", "CoreV1Api", "namespaced_service")
PODS = Resource("Pod", "", "v1", "pods", "CoreV1Api", "namespaced_pod")
HPAS = Resource(
    "HorizontalPodAutoscaler",
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "AutoscalingV2Api",
    "namespaced_horizontal_pod_autoscaler",
)
PDBS = Resource(
    "PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets", "PolicyV1Api", "namespaced_pod_disruption_budget"
)
SCALED_OBJECTS = Resource(
    "ScaledObject", "keda.sh", "v1alpha1", "scaledobjects", "CustomObjectsApi", "namespaced_custom_object"
)
LEASES = Resource("Lease", "coordination.k8s.io", "v1", "leases", "CoordinationV1Api", "namespaced_lease")
ENDPOINT_SLICES = Resource(
    "EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", "DiscoveryV1Api", "namespaced_endpoint_slice"
)

BY_KIND = {r.kind: r for r in (DEPLOYMENTS, SERVICES, PODS, HPAS, PDBS, SCALED_OBJECTS, LEASES, ENDPOINT_SLICES)}

# The verb each operation needs in RBAC terms (``rbac.REQUIRED_RULES`` is derived from what the code declares here).
VERB_OF_OPERATION = {
    "patch": ("create", "patch"),  # server-side apply creates the object when it does not exist yet
    "delete": ("delete",),
    "read": ("get",),
    "list": ("list",),
    "watch": ("watch",),
    "create": ("create",),
    "replace": ("update",),
}


def load_api_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """In-cluster config first (the Helm install), then the kubeconfig named in settings or ``~/.kube/config``."""
    configuration = k8s.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return _finish(configuration)
        except ConfigException:
            pass
    try:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration
        )
    except (ConfigException, OSError) as exc:
        raise OrchestrationError(f"No Kubernetes configuration found (in-cluster or kubeconfig): {exc}") from exc
    return _finish(configuration)


def _finish(configuration: k8s.Configuration) -> k8s.ApiClient:
    configuration.retries = False  # KubeRetryPolicy is the single retry policy; urllib3 must not retry underneath
    return k8s.ApiClient(configuration)


class KubeApi:
    """Namespaced CRUD, server-side apply and raw watch streams for the kinds in ``BY_KIND``."""

    def __init__(
        self,
        api_client: k8s.ApiClient,
        namespace: str,
        field_manager: str,
        retry: KubeRetryPolicy | None = None,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.field_manager = field_manager
        self.retry = retry or KubeRetryPolicy()
        self._apis: dict[str, Any] = {}

    # --- operations ------------------------------------------------------------------------------------------------

    def apply(self, resource: Resource, body: Obj) -> Obj:
        name = body["metadata"]["name"]
        return self._retrying(
            resource,
            "patch",
            name,
            lambda: _json(
                self._call(
                    resource,
                    "patch",
                    name=name,
                    body=body,
                    field_manager=self.field_manager,
                    force=True,
                    _content_type=APPLY_CONTENT_TYPE,
                )
            ),
        )

    def read(self, resource: Resource, name: str) -> Obj | None:
        try:
            return self._retrying(resource, "read", name, lambda: _json(self._call(resource, "read", name=name)))
        except _Absent:
            return None

    def delete(self, resource: Resource, name: str, propagation: str = "Background") -> bool:
        """True when something was deleted, False when it was already gone."""
        try:
            self._retrying(
                resource,
                "delete",
                name,
                lambda: _json(
                    self._call(
                        resource,
                        "delete",
                        name=name,
                        propagation_policy=propagation,
                    )
                ),
            )
        except _Absent:
            return False
        return True

    def create(self, resource: Resource, body: Obj) -> Obj | None:
        """None when the object exists already (the caller decides what that means, e.g. a lease held by others)."""
        return self._write(resource, "create", body)

    def replace(self, resource: Resource, body: Obj) -> Obj | None:
        """Optimistic update (``metadata.resourceVersion`` must match); None when someone else changed it first."""
        return self._write(resource, "replace", body, name=body["metadata"]["name"])

    def _write(self, resource: Resource, operation: str, body: Obj, **target: Any) -> Obj | None:
        # A conflict (409) is an answer, not a failure to retry: None tells the caller someone else got there first.
        try:
            return self._retrying(
                resource,
                operation,
                body["metadata"]["name"],
                lambda: _json(self._call(resource, operation, body=self._typed(resource, body), **target)),
                conflict_is_final=True,
            )
        except _Conflict:
            return None

    def list(self, resource: Resource, label_selector: str) -> Obj:
        return self._retrying(
            resource, "list", None, lambda: _json(self._call(resource, "list", label_selector=label_selector))
        )

    def watch(self, resource: Resource, label_selector: str, resource_version: str, timeout_seconds: int) -> Any:
        """Open one watch request (no retries: the caller resumes from its last resourceVersion).

        Returns the raw ``urllib3`` response; read it with ``iter_events`` and ``shutdown()`` it to stop early.
        """
        try:
            return self._call(
                resource,
                "list",
                label_selector=label_selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, timeout_seconds + READ_TIMEOUT_SECONDS),
            )
        except ApiException as exc:
            if exc.status == 410:
                raise  # the watcher lists again
            raise self._translate(exc, resource, "watch", None) from exc

    # --- plumbing --------------------------------------------------------------------------------------------------

    def _api(self, resource: Resource) -> Any:
        if resource.api not in self._apis:
            self._apis[resource.api] = getattr(k8s, resource.api)(self.api_client)
        return self._apis[resource.api]

    @staticmethod
    def _typed(resource: Resource, body: Obj) -> Any:
        """Create and replace take the generated model (e.g. ``V1Lease``) rather than a dict."""
        if resource.api == "CustomObjectsApi":
            return body
        return getattr(k8s, f"{resource.version.capitalize()}{resource.kind}").from_dict(body)

    def _call(self, resource: Resource, operation: str, name: str | None = None, **kwargs: Any) -> Any:
        method = getattr(self._api(resource), f"{operation}_{resource.suffix}")
        positional: list[Any] = []
        if resource.api == "CustomObjectsApi":
            positional = [resource.group, resource.version, self.namespace, resource.plural]
            if name is not None:
                positional.append(name)
        else:
            if name is not None:
                positional.append(name)
            positional.append(self.namespace)
        kwargs.setdefault("_request_timeout", (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS))
        return method(*positional, _preload_content=False, **kwargs)

    def _retrying(
        self,
        resource: Resource,
        operation: str,
        name: str | None,
        call: Callable[[], T],
        conflict_is_final: bool = False,
    ) -> T:
        last: str = ""
        for attempt in range(self.retry.attempts):
            try:
                return call()
            except ApiException as exc:
                if exc.status == 404 and operation in ("read", "delete"):
                    raise _Absent from exc
                if exc.status == 409 and conflict_is_final:
                    raise _Conflict from exc
                if exc.status not in RETRYABLE_STATUSES:
                    raise self._translate(exc, resource, operation, name) from exc
                last = f"HTTP {exc.status}: {_message(exc)}"
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, dropped mid-response, timed out
                last = f"connection error: {type(exc).__name__}"
            if attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt)
                logger.warning(
                    "Kubernetes %s %s %s failed (%s); retry %d in %.2fs",
                    operation,
                    resource.kind,
                    name or "",
                    last,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
        raise OrchestrationError(
            f"Kubernetes API did not accept {operation} of {resource.kind} {name or ''} in namespace "
            f"{self.namespace!r} after {self.retry.attempts} attempts; last error: {last}."
        )

    def _translate(self, exc: ApiException, resource: Resource, operation: str, name: str | None) -> Exception:
        if exc.status == 403:
            verbs = "/".join(VERB_OF_OPERATION[operation])
            return PermissionDeniedError(
                f"LLM Engine's service account may not {verbs} {resource.qualified} in namespace "
                f"{self.namespace!r}; grant it in the control plane's Role (see docs/kubernetes-orchestrator.md). "
                f"Kubernetes said: {_message(exc)}"
            )
        what = f"{resource.kind} {name}" if name else resource.plural
        if exc.status == 404 and resource.group == SCALED_OBJECTS.group:
            return OrchestrationError(
                f"Kubernetes has no {resource.qualified}: install KEDA or set LLM_ENGINE_KUBERNETES_KEDA_ENABLED=false."
            )
        return OrchestrationError(f"Kubernetes rejected {operation} of {what} (HTTP {exc.status}): {_message(exc)}")


class _Absent(Exception):
    pass


class _Conflict(Exception):
    pass


def _json(response: Any) -> Obj:
    data = response.data
    if not data:
        return {}
    decoded: Obj = json.loads(data)
    return decoded


def _message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def iter_events(response: Any) -> Iterator[Obj]:
    """Decode a watch stream: one JSON event per line; partial chunks are buffered until their newline."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                event: Obj = json.loads(line)
                yield event
