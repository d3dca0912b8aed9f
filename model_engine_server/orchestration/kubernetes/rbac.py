"""The Kubernetes permissions the control plane needs in the endpoint namespace — and nothing more.

The Helm chart's Role is tested against ``REQUIRED_RULES``; ``tests/kubernetes`` checks that the requests the
orchestrator and the leader elector actually send are covered by it (and that every rule is used).
"""

from __future__ import annotations

from model_engine_server.orchestration.kubernetes.client import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    HPAS,
    LEASES,
    PDBS,
    PODS,
    SCALED_OBJECTS,
    SERVICES,
    Resource,
)
from model_engine_server.orchestration.kubernetes.jobs import JOBS

# Server-side apply needs create (first apply) and patch; the watch cache needs list and watch; delete cleans up.
_MANAGED = ["create", "delete", "list", "patch", "watch"]


def _rule(resource: Resource, verbs: list[str]) -> dict[str, list[str]]:
    return {"apiGroups": [resource.group], "resources": [resource.plural], "verbs": sorted(verbs)}


def required_rules(keda_enabled: bool = True) -> list[dict[str, list[str]]]:
    """Rules for a namespaced Role; without KEDA the ScaledObject rule may be left out."""
    rules = [
        _rule(DEPLOYMENTS, _MANAGED),
        _rule(SERVICES, _MANAGED),
        _rule(HPAS, _MANAGED),
        _rule(PDBS, _MANAGED),
        _rule(PODS, ["list", "watch"]),  # read-only: pod status is where failures show
        _rule(JOBS, _MANAGED),  # batch completions and fine-tunes
        _rule(LEASES, ["create", "get", "update"]),  # leader election of the reconciler
    ]
    if keda_enabled:
        rules.append(_rule(SCALED_OBJECTS, _MANAGED))
    return rules


REQUIRED_RULES: list[dict[str, list[str]]] = required_rules(keda_enabled=True)

# The gateway and the worker route to pods (routing.KubernetesPodResolver): read-only, EndpointSlices only.
ROUTING_RULES: list[dict[str, list[str]]] = [_rule(ENDPOINT_SLICES, ["list", "watch"])]
