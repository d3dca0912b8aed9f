"""Pick the orchestrator the settings ask for. Kubernetes support is imported only when it is used."""

from __future__ import annotations

from model_engine_server.config import OrchestratorKind, Settings
from model_engine_server.domain.ports import Orchestrator


def build_orchestrator(settings: Settings) -> Orchestrator:
    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator

        return KubernetesOrchestrator(settings)
    from model_engine_server.orchestration.local import LocalOrchestrator

    return LocalOrchestrator(settings)
