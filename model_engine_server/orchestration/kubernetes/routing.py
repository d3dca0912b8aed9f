"""Where requests go on Kubernetes: the endpoint's Service, which balances over its ready pods.

Computed from the settings alone (no API call, no client), so a gateway or worker needs no Kubernetes permission.
"""

from __future__ import annotations

from model_engine_server.config import Settings
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.orchestration.kubernetes import naming


class KubernetesServiceResolver:
    """Implements ``domain.ports.UpstreamResolver``."""

    def __init__(self, settings: Settings) -> None:
        self._template = settings.kubernetes_service_url_template
        self._namespace = settings.kubernetes_namespace

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        return [self._template.format(service=naming.resource_name(endpoint), namespace=self._namespace)]
