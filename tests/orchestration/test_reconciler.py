"""The reconciler against a real registry (PostgreSQL and SQLite) and real local processes (the fake TGI server)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.orchestration.local import LocalOrchestrator
from model_engine_server.orchestration.local.processes import process_alive
from model_engine_server.orchestration.reconciler import ReconcilePolicy, Reconciler
from tests.fakes import FakeOrchestrator
from tests.orchestration.helpers import control_file, eventually

pytestmark = pytest.mark.timeout(90)


def config(model: Path, **changes: object) -> EndpointConfig:
    return replace(EndpointConfig(model_name="smollm2-135m", checkpoint_path=str(model)), **changes)


async def reconciled(
    reconciler: Reconciler, registry: EndpointRegistry, name: str, status: EndpointStatus, timeout: float = 20.0
) -> ModelEndpoint:
    """Run passes until the registry shows ``status`` for ``name``."""

    async def probe() -> ModelEndpoint | None:
        await reconciler.reconcile_once()
        return next((e for e in await registry.list_all() if e.name == name), None)

    found = await eventually(probe, lambda e: e is not None and e.status is status, timeout)
    assert found is not None
    return found


async def test_new_endpoint_goes_in_progress_then_ready(
    registry: EndpointRegistry, orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    created = await registry.create(
        owner="team-a", name="llm", config=config(control_file(tmp_path, startup_seconds=0.5))
    )
    reconciler = Reconciler(registry, orchestrator)

    await reconciler.reconcile_once()
    [starting] = await registry.list_all()
    assert starting.status is EndpointStatus.UPDATE_IN_PROGRESS
    assert (starting.available_workers, starting.unavailable_workers) == (0, 1)

    ready = await reconciled(reconciler, registry, "llm", EndpointStatus.READY)
    assert (ready.available_workers, ready.unavailable_workers) == (1, 0)
    assert ready.status_reason is None
    assert ready.revision == created.revision
    assert len(await orchestrator.upstreams(ready)) == 1


async def test_update_rolls_the_servers_over(
    registry: EndpointRegistry, orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    created = await registry.create(owner="team-a", name="llm", config=config(control_file(tmp_path, "v1")))
    reconciler = Reconciler(registry, orchestrator)
    await reconciled(reconciler, registry, "llm", EndpointStatus.READY)
    [old] = orchestrator.replicas(created.id)

    updated = await registry.update_config("llm", "team-a", config(control_file(tmp_path, "v2", startup_seconds=0.5)))
    assert updated.status is EndpointStatus.UPDATE_PENDING
    await reconciler.reconcile_once()
    [rolling] = await registry.list_all()
    assert rolling.status is EndpointStatus.UPDATE_IN_PROGRESS
    assert rolling.available_workers == 1  # the old replica serves during the roll-over

    ready = await reconciled(reconciler, registry, "llm", EndpointStatus.READY)
    assert ready.revision == 2
    [new] = await eventually(
        lambda: orchestrator.replicas(created.id), lambda rs: len(rs) == 1 and rs[0].pid != old.pid
    )
    assert "v2.json" in new.log_path.read_text()


async def test_delete_stops_the_servers_and_removes_the_record(
    registry: EndpointRegistry, orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    created = await registry.create(owner="team-a", name="llm", config=config(control_file(tmp_path)))
    reconciler = Reconciler(registry, orchestrator)
    await reconciled(reconciler, registry, "llm", EndpointStatus.READY)
    [replica] = orchestrator.replicas(created.id)

    deleting = await registry.mark_deleting("llm", "team-a")
    assert deleting.status is EndpointStatus.DELETE_IN_PROGRESS
    await reconciler.reconcile_once()

    assert await registry.list_all() == []
    assert not process_alive(replica.pid, None)


async def test_crash_loop_is_recorded_as_update_failed_with_the_reason(
    registry: EndpointRegistry, orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    model = control_file(tmp_path, fail="CUDA out of memory")
    await registry.create(owner="team-a", name="llm", config=config(model))
    reconciler = Reconciler(registry, orchestrator)
    failed = await reconciled(reconciler, registry, "llm", EndpointStatus.UPDATE_FAILED)
    assert failed.status_reason is not None
    assert "CUDA out of memory" in failed.status_reason
    assert "replica-0.log" in failed.status_reason


class FailingOrchestrator(FakeOrchestrator):
    """Refuses to apply the endpoints named in ``refuse``."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse

    async def apply(self, endpoint: ModelEndpoint) -> None:
        await super().apply(endpoint)
        if endpoint.name in self.refuse:
            raise OrchestrationError("deployments.apps is forbidden: the service account lacks 'patch'")


async def test_failing_apply_is_update_failed_and_other_endpoints_proceed(
    registry: EndpointRegistry, tmp_path: Path
) -> None:
    orchestrator = FailingOrchestrator(refuse={"broken"})
    orchestrator.observed["fine"] = ObservedState(EndpointStatus.READY, available_workers=1)
    await registry.create(owner="team-a", name="broken", config=config(tmp_path / "m"))
    await registry.create(owner="team-a", name="fine", config=config(tmp_path / "m"))
    reconciler = Reconciler(registry, orchestrator, ReconcilePolicy(apply_retry_seconds=3600))

    await reconciler.reconcile_once()
    await reconciler.reconcile_once()  # a failed revision is not retried before apply_retry_seconds

    by_name = {e.name: e for e in await registry.list_all()}
    assert by_name["broken"].status is EndpointStatus.UPDATE_FAILED
    assert by_name["broken"].status_reason == (
        "Could not apply the endpoint: deployments.apps is forbidden: the service account lacks 'patch'"
    )
    assert by_name["fine"].status is EndpointStatus.READY
    assert orchestrator.applied.count(("broken", 1)) == 1

    # A new revision is applied at once.
    orchestrator.refuse.clear()
    await registry.update_config("broken", "team-a", config(tmp_path / "m", min_workers=1, max_workers=2))
    await reconciler.reconcile_once()
    assert ("broken", 2) in orchestrator.applied
    assert {e.name: e for e in await registry.list_all()}["broken"].status is EndpointStatus.UPDATE_IN_PROGRESS


async def test_a_restarted_reconciler_applies_every_endpoint_once_without_flapping_status(
    registry: EndpointRegistry, tmp_path: Path
) -> None:
    orchestrator = FakeOrchestrator()
    orchestrator.observed["llm"] = ObservedState(EndpointStatus.READY, available_workers=1)
    created = await registry.create(owner="team-a", name="llm", config=config(tmp_path / "m"))
    await Reconciler(registry, orchestrator).reconcile_once()
    assert (await registry.get_by_id(created.id)).status is EndpointStatus.READY  # type: ignore[union-attr]

    restarted = Reconciler(registry, orchestrator)
    written: list[EndpointStatus] = []
    original_set_status = registry.set_status

    async def spy(endpoint_id: str, revision: int, status: EndpointStatus, reason: str | None) -> bool:
        written.append(status)
        return await original_set_status(endpoint_id, revision, status, reason)

    registry.set_status = spy  # type: ignore[method-assign]
    await restarted.reconcile_once()
    await restarted.reconcile_once()

    assert orchestrator.applied == [("llm", 1), ("llm", 1)]  # once per reconciler, idempotently
    assert written == []  # a READY endpoint is not marked UPDATE_IN_PROGRESS just because the platform restarted


async def test_the_loop_wakes_on_a_poke_and_on_orchestrator_changes(
    registry: EndpointRegistry, orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    # An interval far beyond the test's timeout: only a poke or a change the orchestrator reports can wake the loop.
    reconciler = Reconciler(registry, orchestrator, ReconcilePolicy(interval_seconds=3600))
    loop = asyncio.create_task(reconciler.run())
    try:
        await eventually(lambda: reconciler.passes, lambda passes: passes >= 1)
        await registry.create(owner="team-a", name="llm", config=config(control_file(tmp_path, startup_seconds=0.3)))
        reconciler.poke()

        async def status() -> EndpointStatus | None:
            endpoints = await registry.list_all()
            return endpoints[0].status if endpoints else None

        await eventually(status, lambda s: s is EndpointStatus.READY, timeout=20)
    finally:
        loop.cancel()
        await asyncio.wait({loop})


async def test_idle_ready_endpoints_at_min_zero_are_put_to_sleep_and_demand_wakes_them(
    registry: EndpointRegistry, tmp_path: Path
) -> None:
    orchestrator = FakeOrchestrator()
    sleepy = await registry.create(owner="team-a", name="sleepy", config=config(tmp_path, min_workers=0))
    steady = await registry.create(owner="team-a", name="steady", config=config(tmp_path, min_workers=1))
    await registry.create(owner="team-a", name="starting", config=config(tmp_path, min_workers=0))
    for endpoint in (sleepy, steady):
        orchestrator.observed[endpoint.name] = ObservedState(EndpointStatus.READY, 1)
    reconciler = Reconciler(registry, orchestrator, ReconcilePolicy(idle_seconds=0.0))

    await reconciler.reconcile_once()  # applies them; the records become READY
    await reconciler.reconcile_once()
    # Idle from the start (idle_seconds=0): only the READY endpoint that may run at zero sleeps; one still coming
    # up for its first revision does not.
    assert orchestrator.asleep == {"sleepy": True, "steady": False, "starting": False}

    long_idle = ReconcilePolicy(idle_seconds=3600.0)  # an hour: the creation itself is recent demand
    await Reconciler(registry, orchestrator, long_idle).reconcile_once()
    assert orchestrator.asleep["sleepy"] is False
