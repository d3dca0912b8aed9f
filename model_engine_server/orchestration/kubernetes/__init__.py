"""The Kubernetes orchestrator: Deployments, Services, autoscalers and PDBs per endpoint through the Kubernetes API."""

from model_engine_server.orchestration.kubernetes.orchestrator import KubernetesOrchestrator
from model_engine_server.orchestration.kubernetes.routing import KubernetesPodResolver, KubernetesServiceResolver

__all__ = ["KubernetesOrchestrator", "KubernetesPodResolver", "KubernetesServiceResolver"]
