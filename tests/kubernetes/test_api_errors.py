"""API errors (409, 403, 5xx, dropped connections) and watch disconnects, injected at the HTTP level."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.domain.exceptions import OrchestrationError, PermissionDeniedError
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator, naming
from model_engine_server.orchestration.kubernetes.client import PODS
from tests.kubernetes.conftest import (
    FAST_RETRY,
    NAMESPACE,
    OrchestratorFactory,
    add_pod,
    make_api,
    make_endpoint,
    make_settings,
    observe_until,
    roll_out,
)
from tests.kubernetes.emulator import KubeEmulator

DEPLOYMENTS_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
FORBIDDEN = (
    'deployments.apps "x" is forbidden: User "system:serviceaccount:llm-engine:llm-engine" cannot patch '
    'resource "deployments" in API group "apps" in the namespace "llm-engine-endpoints"'
)


@pytest.mark.parametrize(("status", "times"), [(409, 2), (500, 2), (503, 3), (429, 1)])
async def test_retryable_statuses_are_retried_until_apply_succeeds(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator, status: int, times: int
) -> None:
    endpoint = make_endpoint()
    emulator.fail("PATCH", DEPLOYMENTS_PATH, status, times=times)
    await orchestrator.apply(endpoint)
    patches = [r for r in emulator.requests if r.method == "PATCH" and r.plural == "deployments"]
    assert [r.status for r in patches] == [status] * times + [201]


async def test_dropped_connections_are_retried(emulator: KubeEmulator, orchestrator: KubernetesOrchestrator) -> None:
    endpoint = make_endpoint()
    emulator.drop("PATCH", f"/api/v1/namespaces/{NAMESPACE}/services", times=2)
    await orchestrator.apply(endpoint)
    assert emulator.get("", "services", NAMESPACE, naming.resource_name(endpoint)) is not None
    assert [r.status for r in emulator.requests if r.plural == "services" and r.method == "PATCH"] == [-1, -1, 201]


async def test_forbidden_names_the_missing_permission(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    emulator.fail("PATCH", DEPLOYMENTS_PATH, 403, message=FORBIDDEN)
    with pytest.raises(PermissionDeniedError) as caught:
        await orchestrator.apply(make_endpoint())
    message = caught.value.message
    assert "may not create/patch deployments.apps in namespace 'llm-engine-endpoints'" in message
    assert "cannot patch resource" in message  # the API server's own words follow
    assert len([r for r in emulator.requests if r.method == "PATCH"]) == 1  # 403 is not retried


async def test_persistent_server_errors_give_up_with_a_message(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    emulator.fail("PATCH", DEPLOYMENTS_PATH, 500, times=100, message="etcdserver: request timed out")
    with pytest.raises(OrchestrationError) as caught:
        await orchestrator.apply(make_endpoint())
    assert "after 4 attempts" in caught.value.message and "etcdserver: request timed out" in caught.value.message


async def test_a_half_applied_endpoint_says_so_and_is_completed_on_reapply(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = make_endpoint()
    emulator.fail("PATCH", "/horizontalpodautoscalers/", 422, message="spec.maxReplicas: Invalid value")
    with pytest.raises(OrchestrationError) as caught:
        await orchestrator.apply(endpoint)
    name = naming.resource_name(endpoint)
    assert caught.value.message.startswith(f"Deployment {name} was applied but its HorizontalPodAutoscaler was not")
    state = await observe_until(orchestrator, endpoint, lambda s: s.missing)
    assert state.reason == f"HorizontalPodAutoscaler {name} is missing; re-applying"

    await orchestrator.apply(endpoint)
    state = await observe_until(orchestrator, endpoint, lambda s: not s.missing)
    assert state.status == EndpointStatus.UPDATE_IN_PROGRESS


async def test_watches_resume_from_the_last_version_after_a_disconnect(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = make_endpoint()
    await orchestrator.apply(endpoint)
    pods = orchestrator.cache.watchers["Pod"]
    relists = pods.relists
    watches_before = len([r for r in emulator.requests if r.plural == "pods" and r.watch])

    emulator.drop_watches()
    add_pod(
        emulator,
        endpoint,
        "late",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available",
                }
            ],
        },
    )
    roll_out(emulator, endpoint, available=0)
    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.UPDATE_FAILED)
    assert "Cannot schedule pod" in (state.reason or "")
    assert pods.relists == relists  # resumed from its resourceVersion: the event written while away was replayed
    assert len([r for r in emulator.requests if r.plural == "pods" and r.watch]) > watches_before


async def test_watches_relist_when_their_version_is_gone(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = make_endpoint()
    await orchestrator.apply(endpoint)
    add_pod(emulator, endpoint, "a", {"phase": "Running"})
    pods = orchestrator.cache.watchers["Pod"]
    relists = pods.relists

    emulator.compact()
    emulator.drop_watches()
    emulator.remove("", "pods", NAMESPACE, f"{naming.resource_name(endpoint)}-a")
    add_pod(emulator, endpoint, "b", {"phase": "Running"})
    await observe_until(
        orchestrator,
        endpoint,
        lambda _: (
            [p["metadata"]["name"][-1] for p in orchestrator.cache.select(PODS, naming.selector_labels(endpoint))]
            == ["b"]
        ),
    )
    assert pods.relists == relists + 1


async def test_unsynced_cache_reports_the_watch_error(emulator: KubeEmulator, tmp_path: Path) -> None:
    emulator.fail("GET", f"/api/v1/namespaces/{NAMESPACE}/pods", 403, times=1000, message="pods is forbidden")
    orchestrator = KubernetesOrchestrator(make_settings(tmp_path), api=make_api(emulator), retry=FAST_RETRY)
    await orchestrator.start()
    try:
        state = await observe_until(orchestrator, make_endpoint(), lambda s: "may not list pods" in (s.reason or ""))
        assert state.status == EndpointStatus.UPDATE_IN_PROGRESS and not state.missing
        emulator.faults.clear()
        state = await observe_until(orchestrator, make_endpoint(), lambda s: s.missing, timeout=20)
        assert "does not exist" in (state.reason or "")
    finally:
        await orchestrator.close()
        orchestrator.api.api_client.close()


async def test_keda_enabled_without_keda_installed_says_so(
    emulator: KubeEmulator, make_orchestrator: OrchestratorFactory
) -> None:
    orchestrator = await make_orchestrator(kubernetes_keda_enabled=True)
    emulator.fail("PATCH", "/scaledobjects/", 404, message="the server could not find the requested resource")
    with pytest.raises(OrchestrationError) as caught:
        await orchestrator.apply(make_endpoint(min_workers=0))
    assert "install KEDA or set LLM_ENGINE_KUBERNETES_KEDA_ENABLED=false" in caught.value.message


async def test_a_record_that_cannot_be_rendered_is_reported_failed(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = make_endpoint()
    await orchestrator.apply(endpoint)
    broken = make_endpoint(checkpoint_path="/home/me/weights")
    state = await orchestrator.observe(broken)
    assert state.status == EndpointStatus.UPDATE_FAILED and "pvc://CLAIM/PATH" in (state.reason or "")
