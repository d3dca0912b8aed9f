"""Choose the orchestrator the settings ask for. Imports are deferred so a one-machine install never loads the
Kubernetes client, and a cluster install never needs the local process supervisor."""

from __future__ import annotations

from model_engine_server.config import OrchestratorKind, Settings
from model_engine_server.domain.ports import Orchestrator


def build_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.kubernetes.orchestrator import KubernetesOrchestrator

        return KubernetesOrchestrator(settings)
    from model_engine_server.orchestration.local.orchestrator import LocalOrchestrator

    return LocalOrchestrator(settings)
