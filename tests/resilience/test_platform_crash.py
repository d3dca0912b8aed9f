"""The platform process (gateway and reconciler; ``model-engine serve``) is SIGKILLed under load, while it is
applying a new endpoint. Restarted, it serves at once; no registry row is half-written or duplicated; the endpoint
that was being applied converges to exactly its replicas — the servers started before the crash are adopted, not
started twice. Runs last in the package: it replaces the platform's process.
"""

from __future__ import annotations

import threading
import time

import httpx

from tests.processes import poll_until
from tests.resilience.conftest import Platform, report


def _load(platform: Platform, stop: threading.Event, outcomes: list[int]) -> None:
    with platform.client(timeout=5) as client:
        while not stop.is_set():
            try:
                outcomes.append(platform.complete(client, "steady").status_code)
            except httpx.TransportError:
                outcomes.append(0)  # the process is gone: the connection fails, as it must
                stop.wait(0.05)  # a client's retry pace, so the restart does not compete with a busy loop


def test_a_killed_platform_restarts_serving_and_converges_without_duplicates(platform: Platform) -> None:
    platform.create_ready_endpoint("steady")
    stop, outcomes = threading.Event(), []  # type: ignore[var-annotated]
    load = threading.Thread(target=_load, args=(platform, stop, outcomes))
    load.start()
    try:
        poll_until(lambda: outcomes.count(200) >= 50, 20, "load under way")
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
    finally:
        stop.set()
        load.join(timeout=30)

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
    report(
        f"platform SIGKILL under load: restarted and answering /healthz {restarted:.1f}s after the kill, first "
        f"completion {serving:.1f}s; {outcomes.count(200)} completions OK, {outcomes.count(0)} refused connections "
        f"while down; endpoint being applied converged to 3 replicas, {sum(expected.values())} servers in all"
    )
