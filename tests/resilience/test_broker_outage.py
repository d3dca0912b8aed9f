"""Redis (the task broker) stops and comes back, under a running platform with its async worker.

While it is down, an async submit answers 503 and leaves no task id and no task record. Tasks queued before the
outage complete, each exactly once (one record, one SUCCESS); the gateway and the worker reconnect by themselves.
"""

from __future__ import annotations

import time

from tests.processes import poll_until
from tests.resilience.conftest import Platform, report

OUTAGE_SECONDS = 5.0


def test_a_broker_outage_refuses_async_submits_and_loses_no_queued_task(platform: Platform) -> None:
    platform.create_ready_endpoint("redis-known")
    tasks_before = int(platform.postgres.psql("SELECT count(*) FROM async_tasks"))
    served_before = platform.served("redis-known")
    with platform.client() as client:
        # The worker is consuming before the outage, so the outage hits tasks it is running and holding.
        first = platform.submit(client, "redis-known").json()["task_id"]
        poll_until(lambda: client.get(f"/v1/async-tasks/{first}").json()["status"] == "SUCCESS", 60, "worker up")
        queued = [first]
        for _ in range(20):
            submitted = platform.submit(client, "redis-known")
            assert submitted.status_code == 200, submitted.text
            queued.append(submitted.json()["task_id"])

        platform.redis.stop()
        outage_started = time.monotonic()
        refused = 0
        try:
            while time.monotonic() - outage_started < OUTAGE_SECONDS:
                answer = platform.submit(client, "redis-known")
                assert answer.status_code == 503, answer.text
                assert "broker" in answer.json()["detail"]
                assert "task_id" not in answer.json()
                refused += 1
            assert client.get("/readyz").json()["checks"]["broker"].startswith("unreachable")
            # Reading a task's state needs the result store too: 503 with the reason, not an error of ours.
            unknown = client.get(f"/v1/async-tasks/{first}")
            assert unknown.status_code == 503, unknown.text
            assert "broker" in unknown.json()["detail"]
        finally:
            platform.redis.start()
        restarted = time.monotonic()

        def submits_again() -> bool:
            answer = platform.submit(client, "redis-known")
            assert answer.status_code in (200, 503), answer.text
            if answer.status_code == 200:
                queued.append(answer.json()["task_id"])
            return answer.status_code == 200

        submit_recovery = poll_until(submits_again, 30, "async submits accepted after Redis came back")

        def all_done() -> bool:
            answers = [client.get(f"/v1/async-tasks/{task}") for task in queued]
            # 503 (the result store not answering yet) is the documented "retry later", never an error of ours.
            assert {answer.status_code for answer in answers} <= {200, 503}, [a.text for a in answers]
            states = [answer.json()["status"] for answer in answers if answer.status_code == 200]
            assert "FAILURE" not in states, states
            return len(states) == len(queued) and all(state == "SUCCESS" for state in states)

        poll_until(all_done, 90, "every queued task SUCCESS")
        drained = time.monotonic() - restarted
        results = {client.get(f"/v1/async-tasks/{task}").json()["result"]["output"]["text"] for task in queued}
    report(
        f"redis outage {OUTAGE_SECONDS:.0f}s: {refused} async submits refused with 503; submits back "
        f"{submit_recovery:.2f}s after restart; all {len(queued)} tasks SUCCESS {drained:.1f}s after restart"
    )
    assert refused > 0
    assert results == {" the quick brown"}
    # One record per task id handed out; none for the refused submits.
    assert int(platform.postgres.psql("SELECT count(*) FROM async_tasks")) == tasks_before + len(queued)
    assert len(set(queued)) == len(queued)
    # Each task ran once: the inference server answered exactly one request per task, none twice after the outage.
    assert platform.served("redis-known") - served_before == len(queued)
    assert platform.serve.process is not None and platform.serve.process.poll() is None
