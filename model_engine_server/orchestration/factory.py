"""Pick the orchestrator (who runs replicas) and the upstream resolver (where requests go) the settings ask for.
Kubernetes support is imported only when it is used."""

from __future__ import annotations

from model_engine_server.config import OrchestratorKind, Settings
from model_engine_server.domain.ports import Orchestrator, UpstreamResolver


def build_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator

        return KubernetesOrchestrator(settings)
    from model_engine_server.orchestration.local import LocalOrchestrator

    return LocalOrchestrator(settings)


def build_upstream_resolver(settings: Settings, orchestrator: Orchestrator | None = None) -> UpstreamResolver:
    """Where requests go. ``orchestrator`` is the one this process runs, if any: a local orchestrator answers from
    its own, current state; any other process reads the replicas from the state file the local orchestrator keeps.
    On Kubernetes, the endpoint's ready pods (an EndpointSlice watch), or its Service when pod routing is off."""
    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.kubernetes import KubernetesPodResolver, KubernetesServiceResolver

        if settings.kubernetes_pod_routing:
            return KubernetesPodResolver(settings)
        return KubernetesServiceResolver(settings)
    from model_engine_server.orchestration.local import LocalOrchestrator, LocalReplicaDirectory

    if isinstance(orchestrator, LocalOrchestrator):
        return orchestrator
    return LocalReplicaDirectory(settings.data_dir)
