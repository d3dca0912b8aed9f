"""Where requests go on Kubernetes: each ready pod of the endpoint, or its Service.

``KubernetesPodResolver`` (the default, ``LLM_ENGINE_KUBERNETES_POD_ROUTING``) watches the endpoint namespace's
EndpointSlices — the API the Service's own proxying is built on — and answers the pod addresses that are ready, so the
gateway balances per pod (``inference.routing``) instead of leaving it to kube-proxy's random choice. A pod leaves the
answer as soon as it stops being ready or starts terminating (draining), exactly when the Service would stop sending
it traffic. It needs ``list`` and ``watch`` on ``endpointslices`` (``rbac.ROUTING_RULES``; the chart grants them).

While the watch is not available — not yet listed, no permission, API server unreachable, no Kubernetes configuration
— it answers the Service URL, which is what ``KubernetesServiceResolver`` always answers (computed from the settings
alone: no API call, no permission).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from model_engine_server.config import Settings
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.orchestration.kubernetes import naming
from model_engine_server.orchestration.kubernetes.cache import Watcher
from model_engine_server.orchestration.kubernetes.client import (
    ENDPOINT_SLICES,
    KubeApi,
    KubeRetryPolicy,
    Obj,
    load_api_client,
)

logger = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # set by the EndpointSlice controller on every slice of a Service
FORBIDDEN_HINT = (
    "Requests go to each endpoint's Service meanwhile. Grant the gateway the routing Role (the chart's `-routing` "
    "Role, rbac.create with endpoints.podRouting) or turn pod routing off (chart endpoints.podRouting=false, "
    "LLM_ENGINE_KUBERNETES_POD_ROUTING=false)."
)
_PORT_NAME = "http"  # the Service's (and the inference container's) port name, see manifests.py


class KubernetesServiceResolver:
    """Implements ``domain.ports.UpstreamResolver``: the endpoint's Service URL."""

    def __init__(self, settings: Settings) -> None:
        self._template = settings.kubernetes_service_url_template
        self._namespace = settings.kubernetes_namespace

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        return [self._template.format(service=naming.resource_name(endpoint), namespace=self._namespace)]


def ready_pod_urls(slices: Iterable[Obj]) -> list[str]:
    """Base URLs of the ready endpoints in a Service's EndpointSlices, sorted (a stable answer for the router)."""
    urls: set[str] = set()
    for endpoint_slice in slices:
        port = _http_port(endpoint_slice.get("ports") or [])
        if port is None:
            continue
        ipv6 = endpoint_slice.get("addressType") == "IPv6"
        for endpoint in endpoint_slice.get("endpoints") or []:
            # An unset ``ready`` means ready (the API's own rule); terminating pods are never ready.
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                urls.add(f"http://[{address}]:{port}" if ipv6 else f"http://{address}:{port}")
    return sorted(urls)


def _http_port(ports: list[Obj]) -> int | None:
    named = [p for p in ports if p.get("name") == _PORT_NAME and p.get("port")]
    chosen = named or [p for p in ports if p.get("port")]
    return int(chosen[0]["port"]) if chosen else None


class KubernetesPodResolver:
    """Implements ``domain.ports.UpstreamResolver``: ready pod addresses from an EndpointSlice watch, falling back to
    the Service URL while the watch is unavailable. The watch starts on the first request (no Kubernetes API call
    for a process that never routes) and runs in a daemon thread; ``close()`` stops it."""

    def __init__(self, settings: Settings, api: KubeApi | None = None, retry: KubeRetryPolicy | None = None) -> None:
        self._settings = settings
        self._service = KubernetesServiceResolver(settings)
        self._api = api
        self._retry = retry or KubeRetryPolicy()
        self._watcher: Watcher | None = None
        self._unavailable = False  # no Kubernetes configuration: the Service URL for good
        self._starting = asyncio.Lock()

    @property
    def watching(self) -> bool:
        """The pod view is current (listed, and the last list or watch succeeded)."""
        watcher = self._watcher
        return watcher is not None and watcher.synced.is_set() and watcher.error is None

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        if self._watcher is None and not self._unavailable:
            await self._start()
        watcher = self._watcher
        if watcher is None or not self.watching:
            return await self._service.upstreams(endpoint)
        return ready_pod_urls(watcher.select({SERVICE_NAME_LABEL: naming.resource_name(endpoint)}))

    async def _start(self) -> None:
        async with self._starting:
            if self._watcher is not None or self._unavailable:
                return
            if self._api is None:
                try:
                    api_client = await asyncio.to_thread(load_api_client, self._settings.kubernetes_kubeconfig)
                except OrchestrationError as exc:
                    logger.warning("Routing through Services: %s", exc.message)
                    self._unavailable = True
                    return
                s = self._settings
                self._api = KubeApi(api_client, s.kubernetes_namespace, s.kubernetes_field_manager, self._retry)
            self._watcher = Watcher(
                self._api,
                ENDPOINT_SLICES,
                SERVICE_NAME_LABEL,  # every Service's slices: the namespace holds only endpoints' Services
                self._settings.kubernetes_watch_timeout_seconds,
                on_change=lambda: None,  # read on every request; nothing waits for changes
                retry=self._retry,
                forbidden_hint=FORBIDDEN_HINT,
            )
            self._watcher.start()

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
