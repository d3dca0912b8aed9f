"""``KubernetesOrchestrator``: endpoint records in, Deployments and friends out; the cluster's truth back.

Contract with the reconciler (``orchestration/reconciler.py``):

- ``apply(endpoint)`` when the record's ``revision`` changed, or when ``observe`` returned ``missing=True`` (the
  resources vanished, are of an older revision, or were edited by hand). Raises ``OrchestrationError`` (incl.
  ``PermissionDeniedError``) with a message for ``status_reason`` when the API refuses; if the Deployment was written
  but a child was not, the message says so and the next ``observe`` reports ``missing=True``, so nothing stays
  half-created silently.
- ``delete(endpoint)`` for DELETE_IN_PROGRESS; idempotent.
- ``observe(endpoint)`` is served from the watch cache (no API call) and may be called for every endpoint on every
  ``wait_for_change`` wake-up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.orchestration import events
from model_engine_server.orchestration.kubernetes import manifests, naming, status
from model_engine_server.orchestration.kubernetes.cache import ObjectCache
from model_engine_server.orchestration.kubernetes.client import (
    BY_KIND,
    DEPLOYMENTS,
    HPAS,
    PDBS,
    PODS,
    SCALED_OBJECTS,
    SERVICES,
    KubeApi,
    KubeRetryPolicy,
    Obj,
    Resource,
    load_api_client,
)

logger = logging.getLogger(__name__)


def watched_resources(settings: Settings) -> list[Resource]:
    kinds = [DEPLOYMENTS, PODS, SERVICES, HPAS, PDBS]
    if settings.kubernetes_keda_enabled:
        kinds.append(SCALED_OBJECTS)
    return kinds


class KubernetesOrchestrator:
    def __init__(
        self,
        settings: Settings,
        zoo: ModelZoo | None = None,
        api: KubeApi | None = None,
        retry: KubeRetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.zoo = zoo or settings.model_zoo()
        self._retry = retry or KubeRetryPolicy()
        self._api = api
        self._owns_client = False
        self._cache: ObjectCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._api is None:
            api_client = await asyncio.to_thread(load_api_client, self.settings.kubernetes_kubeconfig)
            self._api = KubeApi(
                api_client, self.settings.kubernetes_namespace, self.settings.kubernetes_field_manager, self._retry
            )
            self._owns_client = True
        self._cache = ObjectCache(
            self._api,
            watched_resources(self.settings),
            naming.MANAGED_SELECTOR,
            self.settings.kubernetes_watch_timeout_seconds,
            self._notify_from_thread,
            self._retry,
        )
        self._cache.start()

    async def close(self) -> None:
        if self._cache is not None:
            await asyncio.to_thread(self._cache.stop)
            self._cache = None
        if self._owns_client and self._api is not None:
            self._api.api_client.close()  # type: ignore[no-untyped-call]
            self._api = None

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            raise RuntimeError("KubernetesOrchestrator.start() was not called")
        return self._api

    @property
    def cache(self) -> ObjectCache:
        if self._cache is None:
            raise RuntimeError("KubernetesOrchestrator.start() was not called")
        return self._cache

    # --- changes ---------------------------------------------------------------------------------------------------

    async def apply(self, endpoint: ModelEndpoint) -> None:
        current = self._current_replicas(endpoint)
        desired = manifests.build_manifests(endpoint, self.settings, self.zoo, current_replicas=current)
        deployment = await self._apply(DEPLOYMENTS, desired.deployment)
        uid = deployment.get("metadata", {}).get("uid")
        if not uid:
            raise OrchestrationError(f"Kubernetes returned Deployment {desired.name} without a uid.")
        for child in desired.children():
            resource = _resource_of(child)
            try:
                await self._apply(resource, manifests.owned_by(child, desired.name, uid))
            except OrchestrationError as exc:
                raise type(exc)(
                    f"Deployment {desired.name} was applied but its {resource.kind} was not: {exc.message}"
                ) from exc
        # Switching between HPA and KEDA (min_workers crossed 0): the other autoscaler must go, or both would scale.
        if desired.hpa is not None and self.settings.kubernetes_keda_enabled:
            await self._delete(SCALED_OBJECTS, desired.name)
        elif desired.scaled_object is not None:
            await self._delete(HPAS, desired.name)
        logger.info("applied endpoint %s (revision %d) as %s", endpoint.name, endpoint.revision, desired.name)

    async def delete(self, endpoint: ModelEndpoint) -> None:
        name = naming.resource_name(endpoint)
        # The Deployment owns the rest (garbage collection); deleting children explicitly too makes the endpoint
        # disappear at once and cleans up after an apply that failed before ownerReferences were set.
        kinds = [DEPLOYMENTS, SERVICES, HPAS, PDBS]
        if self.settings.kubernetes_keda_enabled:
            kinds.append(SCALED_OBJECTS)
        for resource in kinds:
            await self._delete(resource, name)
        logger.info("deleted endpoint %s (%s)", endpoint.name, name)

    async def _apply(self, resource: Resource, body: Obj) -> Obj:
        obj = await asyncio.to_thread(self.api.apply, resource, body)
        if self._cache is not None:
            self._cache.remember(resource, obj)
        return obj

    async def _delete(self, resource: Resource, name: str) -> None:
        await asyncio.to_thread(self.api.delete, resource, name)
        if self._cache is not None:
            self._cache.forget(resource, name)

    # --- observations ----------------------------------------------------------------------------------------------

    async def observe(self, endpoint: ModelEndpoint) -> ObservedState:
        cache = self.cache
        if not cache.synced:
            errors = "; ".join(cache.errors())
            return ObservedState(
                EndpointStatus.UPDATE_IN_PROGRESS,
                reason="Waiting for the Kubernetes watch cache" + (f" ({errors})" if errors else ""),
            )
        name = naming.resource_name(endpoint)
        deployment = cache.get(DEPLOYMENTS, name)
        if deployment is None:
            return _missing(f"Deployment {name} does not exist in namespace {self.settings.kubernetes_namespace}")
        try:
            problem = self._drift(endpoint, deployment)
        except OrchestrationError as exc:  # the record cannot be rendered (e.g. an unusable checkpoint_path)
            return ObservedState(EndpointStatus.UPDATE_FAILED, reason=exc.message)
        if problem:
            return _missing(problem, deployment)
        config = endpoint.config
        pods = cache.select(PODS, naming.selector_labels(endpoint))
        gpu_type = config.gpu_type or (entry.gpu_type if (entry := self.zoo.get(config.model_name)) else None)
        state = status.derive_state(deployment, pods, config.gpus, gpu_type, scale_to_zero=config.min_workers == 0)
        return status.while_scaling(endpoint, state)

    async def set_asleep(self, endpoint: ModelEndpoint, asleep: bool) -> None:
        """Without KEDA the control plane does the step between zero and one worker: the Deployment goes to zero
        replicas (the HPA stands aside while its target is at zero) and back to one when a gateway reports demand.
        With KEDA its ScaledObject does both, from the same demand, so this leaves the Deployment alone."""
        config = endpoint.config
        if self._cache is None or config.min_workers > 0 or manifests.uses_keda(config, self.settings):
            return
        deployment = self._cache.get(DEPLOYMENTS, naming.resource_name(endpoint))
        annotations = (deployment or {}).get("metadata", {}).get("annotations", {}) or {}
        if deployment is None or annotations.get(naming.REVISION_ANNOTATION) != str(endpoint.revision):
            return  # not applied yet: apply() decides
        replicas = int(deployment.get("spec", {}).get("replicas", 1))
        if asleep != (replicas == 0):
            wanted = manifests.build_manifests(endpoint, self.settings, self.zoo, current_replicas=0 if asleep else 1)
            await self._apply(DEPLOYMENTS, wanted.deployment)
            logger.info("endpoint %s: %s", endpoint.name, "idle, scaled to zero" if asleep else "woken up by demand")

    def _drift(self, endpoint: ModelEndpoint, deployment: Obj) -> str | None:
        """Why the cluster no longer matches what apply() would write, or None."""
        name = naming.resource_name(endpoint)
        annotations = deployment.get("metadata", {}).get("annotations", {}) or {}
        applied = annotations.get(naming.REVISION_ANNOTATION)
        if applied != str(endpoint.revision):
            return f"Deployment {name} runs revision {applied}, the endpoint is at revision {endpoint.revision}"
        desired = manifests.build_manifests(endpoint, self.settings, self.zoo, current_replicas=0)
        for child in desired.children():
            resource = _resource_of(child)
            if self.cache.watching(resource) and self.cache.get(resource, name) is None:
                return f"{resource.kind} {name} is missing"
        if _fingerprint(desired.deployment) != _fingerprint(deployment):
            return f"Deployment {name} was changed outside LLM Engine"
        return None

    async def wait_for_change(self, timeout: float) -> None:
        await events.wait_for_change(self._changed, timeout)

    def _notify_from_thread(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._changed.set)
            except RuntimeError:  # the loop closed between the check and the call
                pass

    def _current_replicas(self, endpoint: ModelEndpoint) -> int | None:
        if self._cache is None:
            return None
        deployment = self._cache.get(DEPLOYMENTS, naming.resource_name(endpoint))
        if deployment is None:
            return None
        return int(deployment.get("spec", {}).get("replicas", 1))


def _missing(reason: str, deployment: Obj | None = None) -> ObservedState:
    available = int((deployment or {}).get("status", {}).get("availableReplicas", 0) or 0)
    return ObservedState(
        EndpointStatus.UPDATE_IN_PROGRESS, available_workers=available, reason=f"{reason}; re-applying", missing=True
    )


def _resource_of(manifest: Obj) -> Resource:
    return BY_KIND[manifest["kind"]]


def _fingerprint(deployment: Obj) -> tuple[Any, ...]:
    """The fields a hand edit would plausibly change; the API server's defaults never touch them."""
    spec = deployment.get("spec", {}).get("template", {}).get("spec", {})
    containers = spec.get("containers", []) or []
    engine: Obj = next((c for c in containers if c.get("name") == manifests.CONTAINER_NAME), {})
    resources = engine.get("resources", {}) or {}
    return (
        engine.get("image"),
        tuple(engine.get("command") or ()),
        tuple(engine.get("args") or ()),
        (resources.get("limits") or {}).get(manifests.GPU_RESOURCE),
        tuple(sorted((spec.get("nodeSelector") or {}).items())),
        spec.get("serviceAccountName"),
    )
