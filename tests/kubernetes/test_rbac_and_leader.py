"""REQUIRED_RULES covers exactly what goes over the wire, and the Lease elects one leader."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime

from model_engine_server.domain.jobs import Job, JobKind, JobStatus, RunState
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
from model_engine_server.orchestration.kubernetes.jobs import KubernetesJobRunner
from model_engine_server.orchestration.kubernetes.leader import LeaseLeaderElector
from model_engine_server.orchestration.kubernetes.rbac import REQUIRED_RULES, required_rules
from tests.kubernetes.conftest import NAMESPACE, OrchestratorFactory, make_api, make_endpoint, roll_out
from tests.kubernetes.emulator import KubeEmulator, RecordedRequest


def rbac_verb(request: RecordedRequest, existed: bool) -> str:
    if request.method == "GET":
        return "watch" if request.watch else ("get" if request.name else "list")
    if request.method == "PATCH":
        return "patch" if existed else "create"  # server-side apply of a new object is a create
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}[request.method]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def attempt(candidate: LeaseLeaderElector) -> bool:
    """Electors are synchronous (they run in the reconciler's threads); the emulator needs this loop free."""
    return await asyncio.to_thread(candidate.try_acquire_or_renew)


def elector(emulator: KubeEmulator, identity: str, clock: FakeClock) -> LeaseLeaderElector:
    return LeaseLeaderElector(
        make_api(emulator), "llm-engine-orchestrator", identity, lease_duration=15, monotonic=clock
    )


async def _run_and_cancel_a_job(orchestrator: KubernetesOrchestrator) -> None:
    """What the job runner sends: apply (create, then patch), the watch (list, watch), and delete."""
    now = datetime.now(UTC)
    job = Job("job-rbac", JobKind.BATCH_COMPLETION, "team", {}, JobStatus.QUEUED, now, now)
    runner = KubernetesJobRunner(orchestrator.settings, orchestrator)
    try:
        await runner.start_job(job)
        await runner.start_job(job)
        deadline = time.monotonic() + 10
        while (await runner.observe_job(job)).state is RunState.PENDING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the watch has listed Jobs once it reports the Job
        await runner.stop_job(job)
    finally:
        await runner.close()


async def test_required_rules_cover_every_request_and_every_rule_is_used(
    emulator: KubeEmulator, make_orchestrator: OrchestratorFactory
) -> None:
    orchestrator: KubernetesOrchestrator = await make_orchestrator(kubernetes_keda_enabled=True)
    endpoint = make_endpoint()
    await orchestrator.apply(endpoint)
    roll_out(emulator, endpoint)
    scaled_to_zero = dataclasses.replace(
        endpoint, config=dataclasses.replace(endpoint.config, min_workers=0), revision=2
    )
    for revision in (endpoint, scaled_to_zero, scaled_to_zero, endpoint):  # create and patch each autoscaler
        await orchestrator.apply(revision)
    await orchestrator.delete(endpoint)
    await _run_and_cancel_a_job(orchestrator)
    clock = FakeClock()
    leader = elector(emulator, "a", clock)
    assert await attempt(leader) and await attempt(leader)
    await asyncio.to_thread(leader.release_now)

    allowed = {
        (g, r, v)
        for rule in REQUIRED_RULES
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    used: set[tuple[str, str, str]] = set()
    for request in emulator.requests:
        # Whether an apply created or patched: the 201 status says it was created.
        used.add((request.group, request.plural, rbac_verb(request, existed=request.status != 201)))
    assert used <= allowed, used - allowed
    assert allowed - used == set()  # nothing granted that the code never uses


def test_without_keda_the_scaledobject_rule_is_dropped() -> None:
    assert all("scaledobjects" not in rule["resources"] for rule in required_rules(keda_enabled=False))
    assert len(required_rules(keda_enabled=False)) == len(REQUIRED_RULES) - 1


async def test_one_leader_at_a_time_and_takeover_after_expiry(emulator: KubeEmulator) -> None:
    clock = FakeClock()
    a, b = elector(emulator, "replica-a", clock), elector(emulator, "replica-b", clock)
    assert await attempt(a)
    assert not await attempt(b)
    clock.now += 10
    assert await attempt(a)  # renewed within the lease
    clock.now += 10
    assert not await attempt(b)  # b saw the renewal, so the lease is fresh for b too

    clock.now += 16  # a stopped renewing (crashed)
    assert await attempt(b)
    lease = emulator.get("coordination.k8s.io", "leases", NAMESPACE, "llm-engine-orchestrator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b" and lease["spec"]["leaseTransitions"] == 1
    assert not await attempt(a) and not a.is_leader


async def test_release_hands_over_at_once(emulator: KubeEmulator) -> None:
    clock = FakeClock()
    a, b = elector(emulator, "replica-a", clock), elector(emulator, "replica-b", clock)
    assert await attempt(a)
    assert not await attempt(b)
    await asyncio.to_thread(a.release_now)
    assert await attempt(b)


async def test_racing_for_an_expired_lease_elects_exactly_one(emulator: KubeEmulator) -> None:
    clock = FakeClock()
    old, a, b = (elector(emulator, n, clock) for n in ("old", "replica-a", "replica-b"))
    assert await attempt(old)
    assert not await attempt(a) and not await attempt(b)
    clock.now += 20
    results = await asyncio.gather(asyncio.to_thread(a.try_acquire_or_renew), asyncio.to_thread(b.try_acquire_or_renew))
    assert sorted(results) == [False, True]
    lease = emulator.get("coordination.k8s.io", "leases", NAMESPACE, "llm-engine-orchestrator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ("replica-a" if results[0] else "replica-b")


async def test_standby_waits_while_the_leader_renews_and_takes_over_on_release(emulator: KubeEmulator) -> None:
    def candidate(identity: str) -> LeaseLeaderElector:
        return LeaseLeaderElector(
            make_api(emulator),
            "llm-engine-orchestrator",
            identity,
            lease_duration=15,
            renew_deadline=5,
            retry_period=0.02,
        )

    def renew_time() -> str:
        lease = emulator.get("coordination.k8s.io", "leases", NAMESPACE, "llm-engine-orchestrator")
        return str(lease["spec"]["renewTime"]) if lease else ""

    leader, standby = candidate("replica-a"), candidate("replica-b")
    await leader.acquire()
    renewing = asyncio.create_task(leader.keep_renewing())
    waiting = asyncio.create_task(standby.acquire())
    seen = {renew_time()}
    while len(seen) < 4:  # three renewals later the standby still waits
        await asyncio.wait({renewing, waiting}, timeout=0.02)
        seen.add(renew_time())
    assert not waiting.done() and not renewing.done()

    renewing.cancel()
    await asyncio.gather(renewing, return_exceptions=True)
    await leader.release()
    await asyncio.wait_for(waiting, 10)
    assert standby.is_leader
    await asyncio.wait_for(leader.keep_renewing(), 10)  # the old leader notices it lost the lease and returns
    assert not leader.is_leader
