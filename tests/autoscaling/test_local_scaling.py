"""Scale to zero and back, and between min and max, on one machine — through the gateway as a user calls it."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.autoscaling.conftest import LocalPlatform
from tests.processes import poll_until

pytestmark = pytest.mark.slow

BODY = {"prompt": "hello there", "max_new_tokens": 5, "temperature": 0}


def _sync(client: httpx.Client, name: str, max_new_tokens: int = 5) -> httpx.Response:
    body = {**BODY, "max_new_tokens": max_new_tokens}
    return client.post("/v1/llm/completions-sync", params={"model_endpoint_name": name}, json=body)


def _stream(client: httpx.Client, name: str, max_new_tokens: int = 5) -> list[dict[str, object]]:
    """The stream's data events; fails unless it answered 200 and its last event finished it."""
    body = {**BODY, "max_new_tokens": max_new_tokens}
    with client.stream("POST", "/v1/llm/completions-stream", params={"model_endpoint_name": name}, json=body) as r:
        assert r.status_code == 200, r.read().decode()
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert events and events[-1]["output"]["finished"], events[-1:]  # type: ignore[index]
    return events


def test_an_endpoint_at_zero_serves_sync_stream_and_async_requests_after_waking(platform: LocalPlatform) -> None:
    platform.create("sleepy")
    poll_until(lambda: platform.workers("sleepy")[:2] == ("READY", 1), 30, "sleepy ready")
    platform.wait_asleep("sleepy")
    assert platform.workers("sleepy")[0] == "READY"  # the published client knows no "asleep" status

    with platform.client() as client:
        answer = _sync(client, "sleepy")
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"]["num_completion_tokens"] == 5
        platform.wait_asleep("sleepy")

        events = _stream(client, "sleepy")
        assert len([e for e in events if e["output"]]) == 5
        platform.wait_asleep("sleepy")

        submitted = client.post("/v1/llm/completions-async", params={"model_endpoint_name": "sleepy"}, json=BODY)
        assert submitted.status_code == 200, submitted.text
        task = submitted.json()["task_id"]

        def finished() -> bool:
            return client.get(f"/v1/async-tasks/{task}").json()["status"] in ("SUCCESS", "FAILURE")

        poll_until(finished, 60, "the async task finished")
        result = client.get(f"/v1/async-tasks/{task}").json()
        assert result["status"] == "SUCCESS", result
        assert result["result"]["output"]["num_completion_tokens"] == 5
    assert platform.starts("sleepy") == 4  # created, then woken once by each of the three requests


def test_twenty_requests_to_a_sleeping_endpoint_start_exactly_one_replica(platform: LocalPlatform) -> None:
    platform.create("crowd")
    platform.wait_asleep("crowd")
    before = platform.starts("crowd")

    with platform.client() as client, ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: _sync(client, "crowd"), range(20)))

    assert [a.status_code for a in answers] == [200] * 20, [a.text for a in answers if a.status_code != 200]
    assert platform.starts("crowd") == before + 1
    with platform.client() as client:
        metrics = client.get("/metrics").text
    assert "llm_engine_endpoint_cold_starts_total" in metrics


def test_load_adds_a_second_replica_and_idling_removes_it_without_failing_a_request(platform: LocalPlatform) -> None:
    platform.create("elastic", min_workers=1, max_workers=2, per_worker=1)
    poll_until(lambda: platform.workers("elastic")[:2] == ("READY", 1), 30, "elastic ready")
    outcomes: list[str] = []
    busy = threading.Event()
    busy.set()
    stop = threading.Event()

    def user() -> None:
        with platform.client() as client:
            while not stop.is_set():
                if not busy.is_set() and threading.current_thread().name != "user-0":
                    time.sleep(0.05)  # idle users wait; user-0 keeps one stream going through the scale-down
                    continue
                try:
                    _stream(client, "elastic", max_new_tokens=20)
                    outcomes.append("ok")
                except (AssertionError, httpx.HTTPError) as exc:
                    outcomes.append(f"failed: {exc}")

    users = [threading.Thread(target=user, name=f"user-{i}") for i in range(4)]
    for thread in users:
        thread.start()
    try:
        poll_until(lambda: platform.workers("elastic")[1] == 2, 60, "a second replica under load")
        busy.clear()  # one stream at a time from here: one replica is enough
        poll_until(lambda: len(platform.servers("elastic")) == 1, 60, "back to one replica process")
        poll_until(lambda: platform.workers("elastic")[1] == 1, 30, "one available worker")
        served = len(outcomes)
        poll_until(lambda: len(outcomes) >= served + 3, 30, "streams served after the scale-down")
    finally:
        stop.set()
        for thread in users:
            thread.join(timeout=30)
    assert [o for o in outcomes if o != "ok"] == []
    assert platform.starts("elastic") == 2


def test_a_gateway_restart_while_an_endpoint_wakes_leaves_it_neither_stuck_asleep_nor_awake(
    platform: LocalPlatform,
) -> None:
    platform.create("restarted")
    platform.wait_asleep("restarted")
    before = platform.starts("restarted")

    def held_request() -> None:
        with platform.client() as client, contextlib.suppress(httpx.TransportError):
            _sync(client, "restarted")  # the gateway dies under it (or just after answering)

    waiting = threading.Thread(target=held_request)
    waiting.start()
    poll_until(lambda: platform.starts("restarted") > before, 30, "the endpoint waking")
    platform.gateway.kill()
    waiting.join(timeout=30)
    # The demand is in the registry, not in the dead gateway: the replica comes up without it.
    poll_until(lambda: platform.ready_servers("restarted"), 30, "a ready replica with no gateway running")
    platform.gateway.start()

    with platform.client() as client:
        answer = _sync(client, "restarted")
    assert answer.status_code == 200, answer.text
    platform.wait_asleep("restarted")  # and with no more requests it goes back to zero


PEER_CREATE = """
import json
from llmengine import Model
from llmengine.data_types.core import LLMInferenceFramework
# The published client's defaults (min_workers=0), on the TGI protocol the stand-in server speaks.
Model.create(name="peer-sleepy", model="smollm2-135m", inference_framework_image_tag="latest",
             inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE)
print(json.dumps({"created": True}))
"""

PEER_COMPLETE = """
import json
from llmengine import Completion
answer = Completion.create(model="peer-sleepy", prompt="hello there", max_new_tokens=5, temperature=0)
print(json.dumps({"tokens": answer.output.num_completion_tokens}))
"""


def test_the_published_client_gets_an_answer_from_an_endpoint_that_slept(platform: LocalPlatform) -> None:
    assert platform.peer(PEER_CREATE) == {"created": True}
    poll_until(lambda: platform.workers("peer-sleepy")[:2] == ("READY", 1), 30, "peer-sleepy ready")
    platform.wait_asleep("peer-sleepy")
    assert platform.peer(PEER_COMPLETE) == {"tokens": 5}
