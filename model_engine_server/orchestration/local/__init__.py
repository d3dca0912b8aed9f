"""Serve endpoints with inference-server processes on this machine (the embedded default)."""

from model_engine_server.orchestration.local.directory import LocalReplicaDirectory
from model_engine_server.orchestration.local.orchestrator import LocalOrchestrator
from model_engine_server.orchestration.local.policy import SupervisionPolicy
from model_engine_server.orchestration.local.replicas import ReplicaPhase, ReplicaView

__all__ = ["LocalOrchestrator", "LocalReplicaDirectory", "ReplicaPhase", "ReplicaView", "SupervisionPolicy"]
