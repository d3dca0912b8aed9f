"""The local orchestrator with real processes: the test kit's TGI server, controlled per start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.orchestration.local import LocalOrchestrator, LocalReplicaDirectory, ReplicaPhase
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.processes import process_alive, process_start_time
from model_engine_server.orchestration.local.state import DeploymentRecord, ReplicaRecord, StateFile
from tests.orchestration.helpers import FAST_POLICY, control_file, eventually, fake_settings, make_endpoint

pytestmark = pytest.mark.timeout(60)


def pid_running(pid: int) -> bool:
    return process_alive(pid, None)


def port_free(port: int) -> bool:
    """Nobody listens: a new server could bind it (with SO_REUSEADDR, as servers do, past TIME_WAIT connections)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def wait_ready(local: LocalOrchestrator, endpoint: ModelEndpoint, timeout: float = 20.0) -> ObservedState:
    return await eventually(
        lambda: local.observe(endpoint),
        lambda s: s.status is EndpointStatus.READY and s.unavailable_workers == 0,
        timeout,
    )


async def test_apply_starts_min_workers_replicas_that_answer(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("two", control_file(tmp_path, startup_seconds=0.3), min_workers=2, max_workers=2)

    await orchestrator.apply(endpoint)
    starting = await orchestrator.observe(endpoint)
    assert starting.status is EndpointStatus.UPDATE_IN_PROGRESS
    assert starting.available_workers == 0
    assert starting.unavailable_workers == 2
    assert await orchestrator.upstreams(endpoint) == []

    state = await wait_ready(orchestrator, endpoint)
    assert (state.available_workers, state.unavailable_workers) == (2, 0)
    upstreams = await orchestrator.upstreams(endpoint)
    assert len(set(upstreams)) == 2
    async with httpx.AsyncClient() as client:
        for url in upstreams:
            assert url.startswith("http://127.0.0.1:")
            assert (await client.get(f"{url}/health")).status_code == 200


async def test_min_workers_zero_still_runs_one_replica(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("zero", control_file(tmp_path), min_workers=0, max_workers=1)
    await orchestrator.apply(endpoint)
    state = await wait_ready(orchestrator, endpoint)
    assert state.available_workers == 1


async def test_apply_twice_does_not_start_more_processes(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("idem", control_file(tmp_path))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    pids = [r.pid for r in orchestrator.replicas(endpoint.id)]
    await orchestrator.apply(endpoint)
    await orchestrator.apply(replace(endpoint, revision=2, config=replace(endpoint.config, labels={"team": "x"})))
    assert [r.pid for r in orchestrator.replicas(endpoint.id)] == pids
    assert (await orchestrator.observe(endpoint)).status is EndpointStatus.READY


async def test_another_process_routes_to_the_same_replicas_through_the_state_file(
    orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    """`model-engine gateway` beside `model-engine orchestrator`, or the async worker: the replica directory reads
    the state file and answers what the running orchestrator answers."""
    endpoint = make_endpoint("shared", control_file(tmp_path, startup_seconds=0.3))
    beside = LocalReplicaDirectory(tmp_path / "data", cache_seconds=0)
    await orchestrator.apply(endpoint)
    assert await beside.upstreams(endpoint) == []  # starting: not routable yet
    await wait_ready(orchestrator, endpoint)
    expected = await orchestrator.upstreams(endpoint)
    assert await eventually(lambda: beside.upstreams(endpoint), lambda urls: urls == expected)
    await orchestrator.delete(endpoint)
    await eventually(lambda: beside.upstreams(endpoint), lambda urls: urls == [])


async def test_the_directory_reads_again_rather_than_answer_no_replica_from_its_cache(tmp_path: Path) -> None:
    """The registry may call an endpoint ready before the directory's cache (0.5 s) has seen the state file that
    says so: a request then must find the replica, not get a 503."""
    endpoint = make_endpoint("fresh", None)
    state = StateFile(state_file_path(tmp_path))
    me = os.getpid()

    def write(ready: bool) -> None:
        replica = ReplicaRecord(0, me, 8123, process_start_time(me), "key", "log", 0, ready=ready)
        state.save([DeploymentRecord(endpoint.id, endpoint.name, 1, "key", 1, [replica])])

    directory = LocalReplicaDirectory(tmp_path)
    write(ready=False)
    assert await directory.upstreams(endpoint) == []
    write(ready=True)
    assert await directory.upstreams(endpoint) == ["http://127.0.0.1:8123"]


async def test_crashed_replica_is_restarted(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("crashy", control_file(tmp_path))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    [first] = orchestrator.replicas(endpoint.id)

    os.kill(first.pid, signal.SIGKILL)
    crashed = await eventually(lambda: orchestrator.observe(endpoint), lambda s: s.status is not EndpointStatus.READY)
    assert crashed.status is EndpointStatus.UPDATE_IN_PROGRESS
    assert crashed.reason is not None and "killed by SIGKILL" in crashed.reason

    await wait_ready(orchestrator, endpoint)
    [second] = orchestrator.replicas(endpoint.id)
    assert second.pid != first.pid
    assert second.log_path == first.log_path
    assert second.log_path.read_text().count("=====") == 2  # one header per start


async def test_crash_loop_turns_update_failed_with_the_servers_message(
    orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    model = control_file(tmp_path, fail="CUDA out of memory. Tried to allocate 20.00 GiB")
    endpoint = make_endpoint("oom", model)
    await orchestrator.apply(endpoint)

    failed = await eventually(
        lambda: orchestrator.observe(endpoint), lambda s: s.status is EndpointStatus.UPDATE_FAILED
    )
    assert failed.reason is not None
    assert "keeps crashing" in failed.reason
    assert "CUDA out of memory" in failed.reason
    assert "exited with code 1" in failed.reason
    assert "logs/endpoints/oom/replica-0.log" in failed.reason
    assert failed.available_workers == 0

    # Fixing the cause is enough: restarts continue (with capped backoff) and the endpoint recovers.
    model.write_text(json.dumps({}))
    await wait_ready(orchestrator, endpoint)


async def test_a_replica_that_never_becomes_healthy_is_replaced(tmp_path: Path) -> None:
    policy = replace(FAST_POLICY, startup_timeout_seconds=0.5, crash_loop_after=2)
    local = LocalOrchestrator(fake_settings(tmp_path / "data"), policy)
    await local.start()
    try:
        endpoint = make_endpoint("slow", control_file(tmp_path, startup_seconds=600))
        await local.apply(endpoint)
        [first] = local.replicas(endpoint.id)
        failed = await eventually(lambda: local.observe(endpoint), lambda s: s.status is EndpointStatus.UPDATE_FAILED)
        assert failed.reason is not None and "did not become healthy within" in failed.reason
        assert not pid_running(first.pid)  # the stuck one was stopped, not left behind
    finally:
        await local.close()


async def test_missing_model_reason_names_it(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("nomodel", tmp_path / "does-not-exist.json")
    await orchestrator.apply(endpoint)
    failed = await eventually(
        lambda: orchestrator.observe(endpoint), lambda s: s.status is EndpointStatus.UPDATE_FAILED
    )
    assert failed.reason is not None and "not found" in failed.reason and "does-not-exist.json" in failed.reason


async def test_unstartable_command_is_update_failed(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path / "data").model_copy(update={"inference_server_command": "/nonexistent/server"})
    local = LocalOrchestrator(settings, FAST_POLICY)
    await local.start()
    try:
        endpoint = make_endpoint("nocmd", control_file(tmp_path))
        await local.apply(endpoint)
        failed = await eventually(lambda: local.observe(endpoint), lambda s: s.status is EndpointStatus.UPDATE_FAILED)
        assert failed.reason is not None and "could not be started" in failed.reason
    finally:
        await local.close()


async def test_delete_stops_processes_and_their_children_and_frees_ports(
    orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    model = control_file(tmp_path, spawn_child=True)
    endpoint = make_endpoint("gone", model, min_workers=2, max_workers=2)
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    replicas = orchestrator.replicas(endpoint.id)
    child = int(model.with_suffix(".child").read_text())
    assert all(pid_running(r.pid) for r in replicas) and pid_running(child)

    await orchestrator.delete(endpoint)

    assert not any(pid_running(r.pid) for r in replicas)
    assert not pid_running(child)
    assert all(port_free(r.port) for r in replicas)
    assert await orchestrator.upstreams(endpoint) == []
    assert orchestrator.replicas(endpoint.id) == []
    await orchestrator.delete(endpoint)  # idempotent


async def test_a_replica_ignoring_sigterm_is_killed_after_the_grace(
    orchestrator: LocalOrchestrator, tmp_path: Path
) -> None:
    endpoint = make_endpoint("stubborn", control_file(tmp_path, ignore_sigterm=True))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    [replica] = orchestrator.replicas(endpoint.id)
    await orchestrator.delete(endpoint)
    assert not pid_running(replica.pid)


async def test_close_stops_every_replica(tmp_path: Path) -> None:
    local = LocalOrchestrator(fake_settings(tmp_path / "data"), FAST_POLICY)
    await local.start()
    endpoints = [make_endpoint(f"e{i}", control_file(tmp_path, f"m{i}")) for i in range(2)]
    for endpoint in endpoints:
        await local.apply(endpoint)
    for endpoint in endpoints:
        await wait_ready(local, endpoint)
    pids = [r.pid for e in endpoints for r in local.replicas(e.id)]
    await local.close()
    assert pids and not any(pid_running(pid) for pid in pids)


async def test_new_revision_rolls_over_without_a_gap(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("roll", control_file(tmp_path, "v1"))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    [old] = orchestrator.replicas(endpoint.id)

    slow_start = control_file(tmp_path, "v2", startup_seconds=1.5)
    updated = replace(endpoint, revision=2, config=replace(endpoint.config, checkpoint_path=str(slow_start)))
    await orchestrator.apply(updated)
    during = await orchestrator.observe(updated)
    assert during.status is EndpointStatus.UPDATE_IN_PROGRESS
    assert await orchestrator.upstreams(updated) == [f"http://127.0.0.1:{old.port}"]  # the old one keeps serving

    await wait_ready(orchestrator, updated)
    [new] = await eventually(lambda: orchestrator.replicas(updated.id), lambda rs: len(rs) == 1)
    assert new.pid != old.pid
    assert await orchestrator.upstreams(updated) == [f"http://127.0.0.1:{new.port}"]
    await eventually(lambda: pid_running(old.pid), lambda running: not running)


async def test_failed_rollover_keeps_the_old_replicas_serving(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("badroll", control_file(tmp_path, "good"))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    [old] = orchestrator.replicas(endpoint.id)

    broken = control_file(tmp_path, "broken", fail="weights are corrupt")
    updated = replace(endpoint, revision=2, config=replace(endpoint.config, checkpoint_path=str(broken)))
    await orchestrator.apply(updated)
    failed = await eventually(lambda: orchestrator.observe(updated), lambda s: s.status is EndpointStatus.UPDATE_FAILED)
    assert failed.reason is not None and "weights are corrupt" in failed.reason
    assert failed.available_workers == 1
    assert await orchestrator.upstreams(updated) == [f"http://127.0.0.1:{old.port}"]
    assert pid_running(old.pid)


async def test_scaling_up_and_down(orchestrator: LocalOrchestrator, tmp_path: Path) -> None:
    endpoint = make_endpoint("scale", control_file(tmp_path))
    await orchestrator.apply(endpoint)
    await wait_ready(orchestrator, endpoint)
    [first] = orchestrator.replicas(endpoint.id)

    bigger = replace(endpoint, revision=2, config=replace(endpoint.config, min_workers=3, max_workers=3))
    await orchestrator.apply(bigger)
    state = await wait_ready(orchestrator, bigger)
    assert state.available_workers == 3
    assert first.pid in [r.pid for r in orchestrator.replicas(endpoint.id)]  # scaling does not restart

    smaller = replace(bigger, revision=3, config=replace(bigger.config, min_workers=1, max_workers=1))
    await orchestrator.apply(smaller)
    state = await wait_ready(orchestrator, smaller)
    assert state.available_workers == 1
    assert [r.pid for r in orchestrator.replicas(endpoint.id)] == [first.pid]


PLATFORM_SCRIPT = """
import asyncio, json, sys
from model_engine_server.orchestration.local import LocalOrchestrator
from tests.orchestration.helpers import FAST_POLICY, fake_settings, make_endpoint
from pathlib import Path

async def main():
    local = LocalOrchestrator(fake_settings(Path(sys.argv[1])), FAST_POLICY)
    await local.start()
    endpoint = make_endpoint("survivor", sys.argv[2])
    endpoint.id = "end_survivor"
    await local.apply(endpoint)
    while (await local.observe(endpoint)).available_workers < 1:
        await asyncio.sleep(0.05)
    sys.stdout.write(json.dumps([r.pid for r in local.replicas(endpoint.id)]) + "\\n")
    sys.stdout.flush()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def crash_a_platform(data_dir: Path, model: Path) -> list[int]:
    """Run an orchestrator in another process until its replica is ready, then SIGKILL that process."""
    repo_root = Path(__file__).resolve().parents[2]
    platform = subprocess.Popen(
        [sys.executable, "-c", PLATFORM_SCRIPT, str(data_dir), str(model)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo_root,
    )
    try:
        assert platform.stdout is not None
        pids: list[int] = json.loads(platform.stdout.readline())
    finally:
        platform.kill()
        platform.communicate()
    return pids


async def test_restart_re_adopts_running_replicas(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    [pid] = crash_a_platform(data_dir, control_file(tmp_path))
    assert pid_running(pid)  # the platform died; its replica did not

    local = LocalOrchestrator(fake_settings(data_dir), FAST_POLICY)
    await local.start()
    try:
        endpoint = make_endpoint("survivor", control_file(tmp_path))
        endpoint.id = "end_survivor"
        await local.apply(endpoint)
        await wait_ready(local, endpoint)
        [adopted] = local.replicas(endpoint.id)
        assert adopted.pid == pid
        assert adopted.phase is ReplicaPhase.READY
        # Adopted replicas are supervised like our own: a crash is noticed and restarted.
        os.kill(pid, signal.SIGKILL)
        await eventually(
            lambda: local.replicas(endpoint.id),
            lambda rs: len(rs) == 1 and rs[0].pid != pid and rs[0].phase is ReplicaPhase.READY,
        )
    finally:
        await local.close()
    assert not pid_running(pid)


async def test_restart_starts_replicas_whose_processes_are_gone(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    model = control_file(tmp_path)
    [pid] = crash_a_platform(data_dir, model)
    os.killpg(pid, signal.SIGKILL)
    await eventually(lambda: pid_running(pid), lambda running: not running)

    local = LocalOrchestrator(fake_settings(data_dir), FAST_POLICY)
    await local.start()
    try:
        endpoint = make_endpoint("survivor", model)
        endpoint.id = "end_survivor"
        assert local.replicas(endpoint.id) == []
        await local.apply(endpoint)
        await wait_ready(local, endpoint)
        assert local.replicas(endpoint.id)[0].pid != pid
    finally:
        await local.close()
