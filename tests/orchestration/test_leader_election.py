"""``model-engine orchestrator`` with replicas: only the Lease holder reconciles, and a standby takes over when the
leader stops. Two control planes against the Kubernetes API emulator and one real registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from model_engine_server.config import OrchestratorKind, Settings
from model_engine_server.db.migrate import upgrade
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, InferenceFramework, ModelEndpoint
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
from model_engine_server.orchestration.kubernetes.client import LEASES
from model_engine_server.runtime.control_plane import ControlPlane
from model_engine_server.runtime.leadership import reconcile_while_leading
from tests.kubernetes.conftest import NAMESPACE, emulator, make_api  # noqa: F401 (emulator is a fixture)
from tests.kubernetes.emulator import KubeEmulator
from tests.orchestration.helpers import eventually

pytestmark = pytest.mark.timeout(120)

GPU_MODEL = EndpointConfig(
    model_name="llama-3-8b-instruct",
    inference_framework=InferenceFramework.TEXT_GENERATION_INFERENCE,
    gpus=1,
    gpu_type="nvidia-ampere-a10",
    memory="24Gi",
    cpus="4",
)


class CountingOrchestrator(KubernetesOrchestrator):
    """The real Kubernetes orchestrator, remembering which endpoints it was asked to apply."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[str] = []

    async def apply(self, endpoint: ModelEndpoint) -> None:
        self.applied.append(endpoint.name)
        await super().apply(endpoint)


@pytest.fixture
async def planes(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[list[ControlPlane]]:  # noqa: F811
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    upgrade(database_url)
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        orchestrator=OrchestratorKind.KUBERNETES,
        kubernetes_namespace=NAMESPACE,
        reconcile_interval_seconds=0.2,
    )
    started = [ControlPlane(settings, CountingOrchestrator(settings, api=make_api(emulator))) for _ in range(2)]
    for plane in started:
        await plane.start()
    yield started
    for plane in started:
        await plane.close()


async def status_of(plane: ControlPlane, name: str) -> EndpointStatus | None:
    endpoint = next((e for e in await plane.registry.list_all() if e.name == name), None)
    return None if endpoint is None else endpoint.status


async def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(planes: list[ControlPlane]) -> None:
    settings = planes[0].settings
    stops = {"replica-a": asyncio.Event(), "replica-b": asyncio.Event()}
    loops = {
        identity: asyncio.create_task(reconcile_while_leading(settings, plane, stops[identity], identity))
        for identity, plane in zip(stops, planes, strict=True)
    }
    try:
        api = planes[0].orchestrator.api  # type: ignore[attr-defined]

        async def holder() -> str | None:
            lease = await asyncio.to_thread(api.read, LEASES, settings.kubernetes_leader_lease_name)
            return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")

        leader = await eventually(holder, lambda h: h in stops)
        await planes[0].registry.create(owner="team", name="first", config=GPU_MODEL)
        await eventually(lambda: status_of(planes[0], "first"), lambda s: s is not EndpointStatus.UPDATE_PENDING)

        standby = next(identity for identity in stops if identity != leader)
        by_identity = dict(zip(stops, planes, strict=True))
        leading, waiting = by_identity[leader].orchestrator, by_identity[standby].orchestrator
        assert isinstance(leading, CountingOrchestrator) and isinstance(waiting, CountingOrchestrator)
        assert leading.applied == ["first"]
        assert waiting.applied == []  # a standby does not touch the cluster

        stops[leader].set()
        await asyncio.wait_for(loops[leader], 30)  # the leader stops and gives the Lease up
        assert await eventually(holder, lambda h: h == standby, timeout=30) == standby

        await planes[0].registry.create(owner="team", name="second", config=GPU_MODEL)
        await eventually(lambda: status_of(planes[0], "second"), lambda s: s is not EndpointStatus.UPDATE_PENDING)
        assert sorted(waiting.applied) == ["first", "second"]  # a new leader applies everything once
        assert leading.applied == ["first"]
        assert not loops[standby].done()
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.wait(set(loops.values()), timeout=30)
