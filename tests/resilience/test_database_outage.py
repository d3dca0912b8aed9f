"""PostgreSQL stops for ~10 s and comes back, under a running platform.

While it is down, completions to endpoints the gateway already knows keep working, sync and streamed (the endpoint
cache serves the last record it read); writes — endpoint changes and async submits — answer 503 saying the registry
is unreachable, and nothing is half-written. When it is back, everything recovers without restarting any process,
and no endpoint or task record is lost or duplicated.
"""

from __future__ import annotations

import time

from tests.processes import poll_until
from tests.resilience.conftest import Platform, report

OUTAGE_SECONDS = 10.0
STREAM = "/v1/llm/completions-stream"
STREAM_BODY = {"prompt": "hello there", "max_new_tokens": 3, "temperature": 0}


def test_a_database_outage_keeps_completions_and_refuses_writes_with_a_reason(platform: Platform) -> None:
    platform.create_ready_endpoint("pg-known")
    tasks_before = platform.postgres.psql("SELECT id FROM async_tasks ORDER BY id").splitlines()
    with platform.client() as client:
        assert platform.complete(client, "pg-known").status_code == 200
        names_before = sorted(e["name"] for e in client.get("/v1/llm/model-endpoints").json()["model_endpoints"])

        platform.postgres.stop("fast")
        outage_started = time.monotonic()
        completions = refused_writes = 0
        try:
            attempt = 0
            while time.monotonic() - outage_started < OUTAGE_SECONDS:
                completion = platform.complete(client, "pg-known")
                assert completion.status_code == 200, completion.text
                completions += 1
                if attempt % 20 == 0:
                    stream = client.post(STREAM, params={"model_endpoint_name": "pg-known"}, json=STREAM_BODY)
                    assert stream.status_code == 200, stream.text
                    assert '"finished":true' in stream.text.replace(" ", ""), stream.text
                    assert '"error":null' in stream.text.replace(" ", "").rsplit("data:", 1)[-1], stream.text
                    write = client.post(
                        "/v1/llm/model-endpoints", json={"name": f"pg-down-{attempt}", "model_name": "smollm2-135m"}
                    )
                    submit = platform.submit(client, "pg-known")
                    for refused in (write, submit):
                        assert refused.status_code == 503, refused.text
                        assert refused.json()["detail"].startswith("The registry database is unreachable")
                        assert refused.headers["retry-after"] == "5"
                    refused_writes += 2
                attempt += 1
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unreachable")
        finally:
            platform.postgres.start()

        def writes_again() -> bool:
            answer = client.post("/v1/llm/model-endpoints", json={"name": "pg-after", "model_name": "smollm2-135m"})
            assert answer.status_code in (200, 503), answer.text
            return answer.status_code == 200

        recovery = poll_until(writes_again, 30, "writes accepted after the database came back")
        after = platform.submit(client, "pg-known")
        assert after.status_code == 200, after.text
        task = after.json()["task_id"]
        poll_until(lambda: client.get(f"/v1/async-tasks/{task}").json()["status"] == "SUCCESS", 60, "task after")
        report(
            f"postgres outage {OUTAGE_SECONDS:.0f}s: {completions} completions served, "
            f"{refused_writes} writes refused with 503; writes back {recovery:.2f}s after restart"
        )
        assert completions > 0 and refused_writes > 0
        assert client.get("/readyz").status_code == 200
        names_after = sorted(e["name"] for e in client.get("/v1/llm/model-endpoints").json()["model_endpoints"])
    assert names_after == sorted([*names_before, "pg-after"])  # nothing from the outage, nothing twice
    assert platform.postgres.psql("SELECT count(*) FROM model_endpoints WHERE name LIKE 'pg-down-%'") == "0"
    # The task records: the earlier ones, plus the one submitted after the outage; none from the outage.
    tasks_after = platform.postgres.psql("SELECT id FROM async_tasks ORDER BY id").splitlines()
    assert sorted([*tasks_before, task]) == tasks_after
    assert platform.serve.process is not None and platform.serve.process.poll() is None  # no restart needed
