"""Serve endpoints with inference-server processes on this machine (the embedded default)."""

from model_engine_server.orchestration.local.directory import LocalReplicaDirectory
from model_engine_server.orchestration.local.orchestrator import LocalOrchestrator, ReplicaPhase, ReplicaView
from model_engine_server.orchestration.local.policy import SupervisionPolicy

__all__ = ["LocalOrchestrator", "LocalReplicaDirectory", "ReplicaPhase", "ReplicaView", "SupervisionPolicy"]
