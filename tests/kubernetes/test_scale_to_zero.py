"""Scale to zero and back on Kubernetes, against the API emulator: the real registry, the reconciler and the
Kubernetes orchestrator, and the gateway's admission (with its waker) routing through the Service resolver.

Without KEDA the control plane does the step between zero and one worker (the Deployment's replicas); with KEDA the
ScaledObject does it, from the gateways' held and in-flight requests, and the control plane leaves replicas alone.
The test plays the Deployment controller (``roll_out``) and, with KEDA, KEDA itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from model_engine_server.db.registry import Registry
from model_engine_server.domain.admission import Admission, Admitted
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint
from model_engine_server.domain.waking import Waker
from model_engine_server.orchestration.kubernetes import KubernetesServiceResolver, naming
from model_engine_server.orchestration.reconciler import ReconcilePolicy, Reconciler
from model_engine_server.runtime.aio import cancel
from model_engine_server.testing import eventually_async
from tests.kubernetes.conftest import NAMESPACE, OrchestratorFactory, deployment_of, make_settings, roll_out
from tests.kubernetes.emulator import KubeEmulator

IDLE_SECONDS = 1.0
REQUEST = CompletionRequest(prompt="hello", max_new_tokens=4, temperature=0)


@pytest.fixture
async def registry(sqlite_url: str) -> AsyncIterator[Registry]:
    opened = Registry(sqlite_url)
    yield opened
    await opened.close()


async def _platform(
    make_orchestrator: OrchestratorFactory, registry: Registry, tmp_path: Path, **overrides: Any
) -> tuple[ModelEndpoint, Admission, asyncio.Task[None]]:
    overrides["scale_to_zero_idle_seconds"] = IDLE_SECONDS
    orchestrator = await make_orchestrator(**overrides)
    policy = ReconcilePolicy(interval_seconds=0.05, idle_seconds=IDLE_SECONDS)
    reconciling = asyncio.create_task(Reconciler(registry.endpoints, orchestrator, policy).run())
    config = EndpointConfig(model_name="smollm2-135m", min_workers=0, max_workers=2)
    endpoint = await registry.endpoints.create(owner="alice", name="sleepy", config=config)
    resolver = KubernetesServiceResolver(make_settings(tmp_path, **overrides))  # the gateway's: read-only
    waker = Waker(registry.endpoints, resolver, timeout_seconds=60, demand_write_seconds=0.1, poll_seconds=0.05)
    return (
        endpoint,
        Admission(registry.endpoints, resolver, make_settings(tmp_path).model_zoo(), waker=waker),
        reconciling,
    )


async def _record(registry: Registry, endpoint: ModelEndpoint) -> ModelEndpoint:
    found = await registry.endpoints.get_by_id(endpoint.id)
    assert found is not None
    return found


async def _until_recorded(
    registry: Registry, endpoint: ModelEndpoint, status: EndpointStatus, workers: int, reason: str = ""
) -> None:
    await eventually_async(
        lambda: _record(registry, endpoint),
        lambda r: (r.status, r.available_workers) == (status, workers) and reason in (r.status_reason or ""),
        timeout=20,
        what=f"{status.value} with {workers} worker(s) and a reason saying {reason!r}",
    )


async def _replicas(emulator: KubeEmulator, endpoint: ModelEndpoint, wanted: int) -> None:
    def replicas() -> int | None:
        deployment = emulator.get("apps", "deployments", NAMESPACE, naming.resource_name(endpoint))
        return None if deployment is None else int(deployment["spec"]["replicas"])

    await eventually_async(replicas, lambda n: n == wanted, timeout=20, what=f"{wanted} replicas")


async def test_without_keda_the_control_plane_scales_to_zero_and_a_request_wakes_it(
    make_orchestrator: OrchestratorFactory, emulator: KubeEmulator, registry: Registry, tmp_path: Path
) -> None:
    endpoint, admission, reconciling = await _platform(make_orchestrator, registry, tmp_path)
    try:
        await _replicas(emulator, endpoint, 1)  # a new endpoint starts with a worker
        roll_out(emulator, endpoint)
        await _until_recorded(registry, endpoint, EndpointStatus.READY, 1)

        await _replicas(emulator, endpoint, 0)  # idle: the reconciler scales the Deployment to zero
        roll_out(emulator, endpoint)
        await _until_recorded(registry, endpoint, EndpointStatus.READY, 0, "Idle")
        hpa = emulator.get(
            "autoscaling", "horizontalpodautoscalers", NAMESPACE, deployment_of(emulator, endpoint)["metadata"]["name"]
        )
        assert hpa is not None and hpa["spec"]["minReplicas"] == 1  # it stands aside while its target is at zero

        request = asyncio.create_task(admission.admit("sleepy", "alice", REQUEST))
        await _replicas(emulator, endpoint, 1)  # the gateway's demand, in the registry, woke it
        assert not request.done()  # held, not failed
        await _until_recorded(registry, endpoint, EndpointStatus.READY, 0, "Waking")
        roll_out(emulator, endpoint)
        admitted: Admitted = await asyncio.wait_for(request, 20)
        assert admitted.upstreams and admitted.endpoint.id == endpoint.id
    finally:
        await cancel(reconciling)


async def test_with_keda_the_scaled_object_wakes_it_from_the_held_requests(
    make_orchestrator: OrchestratorFactory, emulator: KubeEmulator, registry: Registry, tmp_path: Path
) -> None:
    endpoint, admission, reconciling = await _platform(
        make_orchestrator, registry, tmp_path, kubernetes_keda_enabled=True
    )
    try:
        await _replicas(emulator, endpoint, 0)  # KEDA's to wake: it starts at zero
        roll_out(emulator, endpoint)
        await _until_recorded(registry, endpoint, EndpointStatus.READY, 0)
        name = deployment_of(emulator, endpoint)["metadata"]["name"]
        scaled = emulator.get("keda.sh", "scaledobjects", NAMESPACE, name)
        assert scaled is not None and scaled["spec"]["cooldownPeriod"] == round(IDLE_SECONDS)
        assert "llm_engine_endpoint_held_requests" in scaled["spec"]["triggers"][0]["metadata"]["query"]

        request = asyncio.create_task(admission.admit("sleepy", "alice", REQUEST))
        held = {"endpoint_id": endpoint.id}
        await eventually_async(
            lambda: REGISTRY.get_sample_value("llm_engine_endpoint_held_requests", held), lambda v: v == 1
        )
        await _until_recorded(registry, endpoint, EndpointStatus.READY, 0)
        assert deployment_of(emulator, endpoint)["spec"]["replicas"] == 0  # the control plane leaves it to KEDA
        assert not request.done()

        emulator.patch("apps", "deployments", NAMESPACE, name, {"spec": {"replicas": 1}})  # KEDA activates
        roll_out(emulator, endpoint)
        admitted = await asyncio.wait_for(request, 20)
        assert admitted.upstreams
        assert REGISTRY.get_sample_value("llm_engine_endpoint_held_requests", held) == 0
    finally:
        await cancel(reconciling)
