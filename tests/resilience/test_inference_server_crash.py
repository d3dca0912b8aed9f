"""An inference server is SIGKILLed in the middle of streams.

Streams on it end with the in-band error event within a second; streams on the other replica finish; requests sent
while it is dead go to the live replica (nothing was sent to the dead one, so retrying is safe); the orchestrator
brings a new replica up within 15 s.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import orjson

from tests.processes import poll_until
from tests.resilience.conftest import Platform, report

STREAM = "/v1/llm/completions-stream"
TOKENS = 60  # 3 s of stream at TOKEN_DELAY


def _stream(platform: Platform, name: str, events: list[tuple[float, dict[str, object]]]) -> None:
    body = {"prompt": "hello", "max_new_tokens": TOKENS, "temperature": 0}
    with (
        platform.client(timeout=30) as client,
        client.stream("POST", STREAM, params={"model_endpoint_name": name}, json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append((time.monotonic(), orjson.loads(line[5:])))


def test_a_killed_replica_ends_its_streams_in_band_and_comes_back(platform: Platform) -> None:
    platform.create_ready_endpoint("crash", workers=2)
    replicas = platform.servers("crash")
    assert len(replicas) == 2
    streams: list[list[tuple[float, dict[str, object]]]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=_stream, args=(platform, "crash", events)) for events in streams]
    for thread in threads:
        thread.start()
    poll_until(lambda: all(len(events) >= 5 for events in streams), 10, "every stream under way")
    # Which replica a stream is on is not visible from outside; the busiest-first split puts two on each.
    victim = sorted(replicas)[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    with platform.client() as client:
        served_meanwhile = [platform.complete(client, "crash").status_code for _ in range(20)]
    for thread in threads:
        thread.join(timeout=30)

    failed = [events for events in streams if events[-1][1]["error"] is not None]
    finished = [events for events in streams if events[-1][1]["error"] is None and len(events) == TOKENS]
    assert len(failed) == 2 and len(finished) == 2, [events[-1] for events in streams]
    error_delays = [events[-1][0] - killed_at for events in failed]
    assert max(error_delays) < 1.0
    for events in failed:
        error = events[-1][1]["error"]
        assert isinstance(error, dict) and error["status_code"] == 502 and error["content"]["error"]
    assert served_meanwhile == [200] * 20  # the live replica took them; none was sent to the dead one

    def replaced() -> bool:
        current = platform.servers("crash")
        with platform.client() as client:
            endpoint = client.get("/v1/llm/model-endpoints/crash").json()
        return (
            len(current) >= len(replicas)
            and victim not in current
            and (endpoint["spec"]["deployment_state"]["available_workers"] == 2)
        )

    back = poll_until(replaced, 15, "a new replica in place of the killed one")
    report(
        f"inference server SIGKILL mid-stream: error event after {max(error_delays) * 1000:.0f} ms, "
        f"20/20 requests meanwhile served by the live replica, replica back in {time.monotonic() - killed_at:.1f}s "
        f"(polled {back:.1f}s)"
    )
