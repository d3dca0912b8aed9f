"""The platform process (gateway and reconciler; ``model-engine serve``) is SIGKILLed under load — completions,
endpoint creations and async submits in flight — while it is applying a new endpoint. Restarted, it serves at once;
every write it acknowledged is there, whole, once (no registry row half-written or duplicated; every acknowledged
async task completes); the endpoint that was being applied converges to exactly its replicas — the servers started
before the crash are adopted, not started twice. Runs last in the package: it replaces the platform's process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.processes import poll_until
from tests.resilience.conftest import Platform, report

MAX_CREATIONS = 8


def _load(platform: Platform, stop: threading.Event, outcomes: list[int]) -> None:
    with platform.client(timeout=5) as client:
        while not stop.is_set():
            try:
                outcomes.append(platform.complete(client, "steady").status_code)
            except httpx.TransportError:
                outcomes.append(0)  # the process is gone: the connection fails, as it must
                stop.wait(0.05)  # a client's retry pace, so the restart does not compete with a busy loop


@dataclass
class Writes:
    attempted: list[str] = field(default_factory=list)  # endpoint names sent
    created: list[str] = field(default_factory=list)  # ... and acknowledged (200)
    tasks: list[str] = field(default_factory=list)  # async task ids handed out
    statuses: list[int] = field(default_factory=list)


def _write(platform: Platform, stop: threading.Event, writes: Writes) -> None:
    """Async submits every quarter second and, every second, an endpoint creation (at most ``MAX_CREATIONS``: each
    starts a server), until stopped."""
    with platform.client(timeout=5) as client:
        step = 0
        while not stop.wait(0.25):
            step += 1
            try:
                if step % 4 == 0 and len(writes.attempted) < MAX_CREATIONS:
                    name = f"w-{len(writes.attempted)}"
                    writes.attempted.append(name)
                    body = {"name": name, "model_name": "smollm2-135m", "min_workers": 1, "max_workers": 1}
                    created = client.post("/v1/llm/model-endpoints", json=body)
                    writes.statuses.append(created.status_code)
                    if created.status_code == 200:
                        writes.created.append(name)
                submitted = platform.submit(client, "steady")
                writes.statuses.append(submitted.status_code)
                if submitted.status_code == 200:
                    writes.tasks.append(submitted.json()["task_id"])
            except httpx.TransportError:
                writes.statuses.append(0)


def test_a_killed_platform_restarts_serving_and_converges_without_duplicates(platform: Platform) -> None:
    platform.create_ready_endpoint("steady")
    stop, outcomes, writes = threading.Event(), [], Writes()  # type: ignore[var-annotated]
    load = threading.Thread(target=_load, args=(platform, stop, outcomes))
    writer = threading.Thread(target=_write, args=(platform, stop, writes))
    load.start()
    writer.start()
    try:
        poll_until(
            lambda: outcomes.count(200) >= 50 and len(writes.tasks) >= 5 and len(writes.created) >= 2,
            30,
            "load and writes under way",
        )
        with platform.client() as client:
            created = client.post(
                "/v1/llm/model-endpoints",
                json={"name": "applying", "model_name": "smollm2-135m", "min_workers": 3, "max_workers": 3},
            )
            assert created.status_code == 200, created.text
        # Kill while the reconciler is starting its servers.
        poll_until(lambda: len(platform.servers("applying")) >= 2, 20, "the new endpoint's first server started")
        [worker_before] = platform.workers()
        platform.serve.kill()
        killed_at = time.monotonic()
        platform.serve.start(timeout=60)
        restarted = time.monotonic() - killed_at
        with platform.client() as client:
            first = platform.complete(client, "steady")
        serving = time.monotonic() - killed_at
        assert first.status_code == 200, first.text
        # Writes go on against the restarted process for a moment, then stop.
        acknowledged = len(writes.tasks)
        poll_until(lambda: len(writes.tasks) > acknowledged + 4, 30, "writes accepted by the restarted platform")
    finally:
        stop.set()
        load.join(timeout=30)
        writer.join(timeout=30)

    with platform.client() as client:

        def converged() -> bool:
            endpoint = client.get("/v1/llm/model-endpoints/applying").json()
            return endpoint["status"] == "READY" and endpoint["spec"]["deployment_state"]["available_workers"] == 3

        poll_until(converged, 60, "the endpoint being applied READY with 3 replicas")
        names = [e["name"] for e in client.get("/v1/llm/model-endpoints").json()["model_endpoints"]]
    # Every endpoint (this test's and the earlier tests') runs exactly its replicas: none started twice.
    wanted = dict(
        row.split("|") for row in platform.postgres.psql("SELECT name, min_workers FROM model_endpoints").splitlines()
    )
    expected = {name: int(count) for name, count in wanted.items()}

    def running() -> dict[str, int]:
        return {name: len(platform.servers(name)) for name in expected}

    # The killed platform's async worker shut down by itself: one worker consumes tasks, the new platform's.
    poll_until(lambda: worker_before not in platform.workers(), 30, "the orphaned worker gone")
    assert len(platform.workers()) == 1
    try:
        poll_until(lambda: running() == expected, 20, "exactly the wanted inference servers")
    finally:
        assert running() == expected, platform.serve.log_tail(60)
    assert sorted(names) == sorted(set(names))
    assert platform.postgres.psql("SELECT count(*) FROM model_endpoints WHERE name = 'applying'") == "1"
    assert set(outcomes) <= {200, 0}  # requests during the crash failed to connect; none got a wrong answer
    assert set(writes.statuses) <= {200, 0}, writes.statuses
    # Every acknowledged creation is there once and reads back whole; any other row is one sent when the process
    # died (its answer lost), also whole.
    rows = platform.postgres.psql("SELECT name FROM model_endpoints WHERE name LIKE 'w-%'").splitlines()
    assert len(rows) == len(set(rows))
    assert set(writes.created) <= set(rows) <= set(writes.attempted)
    with platform.client() as client:
        for name in rows:
            endpoint = client.get(f"/v1/llm/model-endpoints/{name}")
            assert endpoint.status_code == 200, endpoint.text
        # Every async task handed out before or after the crash completes, once.
        done: set[str] = set()

        def tasks_done() -> bool:
            for task in set(writes.tasks) - done:
                answer = client.get(f"/v1/async-tasks/{task}")
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] != "FAILURE", answer.text
                if answer.json()["status"] == "SUCCESS":
                    done.add(task)
            return len(done) == len(writes.tasks)

        poll_until(tasks_done, 90, "every acknowledged async task SUCCESS")
    ids = "','".join(writes.tasks)
    assert platform.postgres.psql(f"SELECT count(*) FROM async_tasks WHERE id IN ('{ids}')") == str(len(writes.tasks))
    report(
        f"platform SIGKILL under load: restarted and answering /healthz {restarted:.1f}s after the kill, first "
        f"completion {serving:.1f}s; {outcomes.count(200)} completions OK, {outcomes.count(0)} refused connections "
        f"while down; {len(writes.created)} creations and {len(writes.tasks)} async tasks acknowledged, all present "
        f"once (tasks SUCCESS); endpoint being applied converged to 3 replicas, {sum(expected.values())} servers"
    )
