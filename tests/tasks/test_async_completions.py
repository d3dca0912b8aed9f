"""Async completions end to end: the gateway enqueues, real worker processes run the tasks against an upstream."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from sqlalchemy import text

from model_engine_server.config import Settings
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.testing import eventually_async, free_port
from model_engine_server.testing.tgi import running_instant_tgi
from tests.tasks.conftest import Workers, announce_replicas, gateway_for, ready_endpoint, served_endpoint
from tests.tasks.helpers import post_async_completion, submit, task_state, wait_for_status
from tests.tasks.scripted_tgi import running_scripted_tgi


async def test_submit_then_success_is_the_sync_response(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with running_instant_tgi() as upstream:
        await served_endpoint(registry, task_settings, "demo", upstream.port)
        workers.start()
        task_id = await submit(gateway_client, "demo", prompt="one two three", max_new_tokens=4)
        state = await wait_for_status(gateway_client, task_id)
        assert state["status"] == "SUCCESS", workers.logs()
        assert state["traceback"] is None
        # The same object completions-sync answers with, the task id as its request id.
        assert state["result"] == {
            "request_id": task_id,
            "output": {
                "text": " the quick brown fox",
                "num_prompt_tokens": 3,
                "num_completion_tokens": 4,
            },
        }

        # The worker counts the task's tokens in its owner's usage.
        async def usage_recorded() -> bool:
            response = await gateway_client.get("/v1/usage", headers={"x-api-key": "alice"})
            return [
                (u["endpoint_name"], u["prompt_tokens"], u["completion_tokens"]) for u in response.json()["usage"]
            ] == [("demo", 3, 4)]

        await eventually_async(usage_recorded, timeout=20, what="the task's usage")


async def test_only_the_owner_reads_a_task_and_unknown_ids_are_404(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry
) -> None:
    await ready_endpoint(registry, "private")
    task_id = await submit(gateway_client, "private", caller="alice")
    assert (await task_state(gateway_client, task_id, caller="alice"))["status"] == "PENDING"  # no worker yet
    other = await gateway_client.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": "bob"})
    assert other.status_code == 404
    unknown = await gateway_client.get("/v1/async-tasks/no-such-task", headers={"x-api-key": "alice"})
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]
    # Submitting to someone else's (private) endpoint is a 404 too, and bad input a 4xx.
    bobs = await post_async_completion(gateway_client, "private", "hi", max_new_tokens=3, caller="bob")
    assert bobs.status_code == 404
    bad = await post_async_completion(gateway_client, "private", "hi", max_new_tokens=0, caller="alice")
    assert bad.status_code == 400
    assert bad.json()["detail"] == "max_new_tokens: Input should be greater than 0"


async def test_results_expire(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    # However long the task takes to run, its result is gone once the lifetime has passed: the test waits for the
    # run (seen upstream) and then for the 404, never for a SUCCESS that must fit inside the lifetime.
    short = task_settings.model_copy(update={"async_task_result_ttl_seconds": 1})
    async with running_instant_tgi(record=True) as upstream, gateway_for(short) as short_client:
        await served_endpoint(registry, task_settings, "short-lived", upstream.port)
        workers.start()
        kept = await submit(gateway_client, "short-lived")  # the default lifetime
        assert (await wait_for_status(gateway_client, kept))["status"] == "SUCCESS", workers.logs()
        task_id = await submit(short_client, "short-lived", prompt="short lived")

        async def expired() -> bool:
            response = await short_client.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": "alice"})
            return response.status_code == 404

        await eventually_async(
            lambda: any(body.get("inputs") == "short lived" for _, body in upstream.requests), timeout=60
        )
        await eventually_async(expired, timeout=30, what="the task to expire")
        assert (await task_state(gateway_client, kept))["status"] == "SUCCESS"  # others keep theirs


async def test_upstream_503_and_429_are_retried_and_other_errors_fail_with_a_reason(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with running_scripted_tgi(errors=[503, 429]) as flaky, running_scripted_tgi(errors=[422, 422]) as refusing:
        retried = await ready_endpoint(registry, "flaky")
        failing = await ready_endpoint(registry, "refusing")
        announce_replicas(task_settings, [(retried, [flaky.port]), (failing, [refusing.port])])
        workers.start()
        ok_id = await submit(gateway_client, "flaky", prompt="a b", max_new_tokens=2)
        bad_id = await submit(gateway_client, "refusing")
        ok = await wait_for_status(gateway_client, ok_id)
        bad = await wait_for_status(gateway_client, bad_id)
    assert ok["status"] == "SUCCESS", workers.logs()
    assert ok["result"]["output"]["text"] == " the quick"
    assert flaky.started == 3  # 503, 429, then the answer
    assert bad["status"] == "FAILURE"
    assert bad["result"] is None
    assert bad["traceback"] == "The model server rejected the request: scripted 422"
    assert refusing.started == 1  # a refused request is not repeated


async def test_a_stalled_endpoint_does_not_block_another_endpoints_tasks(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with running_scripted_tgi(stall=True) as stalled, running_instant_tgi() as healthy:
        slow = await ready_endpoint(registry, "stalled")
        fine = await ready_endpoint(registry, "healthy")
        announce_replicas(task_settings, [(slow, [stalled.port]), (fine, [healthy.port])])
        workers.start(concurrency=4)
        stuck = [await submit(gateway_client, "stalled") for _ in range(8)]  # more than the worker has threads
        served = [await submit(gateway_client, "healthy", prompt=f"prompt {i}") for i in range(10)]
        for task_id in served:
            state = await wait_for_status(gateway_client, task_id, timeout=60)
            assert state["status"] == "SUCCESS", workers.logs()
        # The stalled endpoint got at most its share of the threads (3 of 4) and its tasks are still waiting.
        assert 1 <= stalled.started <= 3
        for task_id in stuck:
            assert (await task_state(gateway_client, task_id))["status"] in ("PENDING", "STARTED")


async def test_a_high_priority_endpoints_tasks_do_not_wait_behind_other_endpoints_backlog(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with (
        running_scripted_tgi(stall=True) as first,
        running_scripted_tgi(stall=True) as second,
        running_instant_tgi() as healthy,
    ):
        stalled = [await ready_endpoint(registry, "stalled-1"), await ready_endpoint(registry, "stalled-2")]
        urgent = await ready_endpoint(registry, "urgent", high_priority=True)
        announce_replicas(
            task_settings, [(stalled[0], [first.port]), (stalled[1], [second.port]), (urgent, [healthy.port])]
        )
        workers.start(concurrency=4)
        # Two ordinary endpoints' backlogs, more than the worker has threads, all stuck on their servers...
        stuck = [await submit(gateway_client, name) for name in ("stalled-1", "stalled-2") for _ in range(6)]
        await eventually_async(lambda: first.started + second.started >= 3, timeout=60)
        # ...yet every task of the high-priority endpoint runs: one thread of four is kept for it.
        served = [await submit(gateway_client, "urgent", prompt=f"prompt {i}") for i in range(5)]
        for task_id in served:
            state = await wait_for_status(gateway_client, task_id, timeout=60)
            assert state["status"] == "SUCCESS", workers.logs()
        assert first.started + second.started == 3  # the ordinary endpoints shared the other three threads
        for task_id in stuck:
            assert (await task_state(gateway_client, task_id))["status"] in ("PENDING", "STARTED")


async def test_deleting_an_endpoint_fails_its_queued_tasks(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with running_instant_tgi() as upstream:
        doomed = await ready_endpoint(registry, "doomed")
        gone = await ready_endpoint(registry, "gone")
        announce_replicas(task_settings, [(doomed, [upstream.port]), (gone, [upstream.port])])
        # Queued while no worker runs; then one endpoint is being deleted and the other one is removed entirely.
        deleting_ids = [await submit(gateway_client, "doomed") for _ in range(3)]
        removed_ids = [await submit(gateway_client, "gone") for _ in range(2)]
        await registry.mark_deleting("doomed", "alice")
        await registry.remove(gone.id)
        workers.start()
        for task_id in deleting_ids:
            state = await wait_for_status(gateway_client, task_id)
            assert state["status"] == "FAILURE", workers.logs()
            assert state["traceback"] == "Model endpoint 'doomed' is being deleted."
        for task_id in removed_ids:
            state = await wait_for_status(gateway_client, task_id)
            assert state["status"] == "FAILURE"
            assert state["traceback"] == "Model endpoint 'gone' was deleted before the task ran."
    assert upstream.served == 0


async def test_a_worker_killed_mid_task_does_not_lose_it_and_it_completes_once(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    async with running_scripted_tgi(delay=2.0) as slow:
        await served_endpoint(registry, task_settings, "slow", slow.port)
        doomed = workers.start()
        task_id = await submit(gateway_client, "slow", prompt="x y", max_new_tokens=3)

        async def running_upstream() -> bool:
            return slow.started == 1

        await eventually_async(running_upstream, timeout=60, what="the task to reach the model server")
        assert (await task_state(gateway_client, task_id))["status"] == "STARTED"
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        workers.start()
        state = await wait_for_status(gateway_client, task_id, timeout=90)
    assert state["status"] == "SUCCESS", workers.logs()
    assert state["result"]["output"]["text"] == " the quick brown"
    # The killed worker's request was cut off; the task ran to completion exactly once, on the other worker.
    assert (slow.started, slow.cut_off, slow.completed) == (2, 1, 1)


async def test_readyz_checks_the_broker(gateway_client: httpx.AsyncClient) -> None:
    ready = await gateway_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


async def test_broker_down_at_submit_is_503_and_no_task_is_stored(
    registry: EndpointRegistry, task_settings: Settings
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    down = task_settings.model_copy(update={"broker_url": nowhere, "result_backend_url": nowhere})
    async with gateway_for(down) as client:
        await ready_endpoint(registry, "demo")
        response = await client.post(
            "/v1/llm/completions-async",
            params={"model_endpoint_name": "demo"},
            json={"prompt": "hi", "max_new_tokens": 3, "temperature": 0},
            headers={"x-api-key": "alice"},
        )
        assert response.status_code == 503
        assert response.json()["detail"].startswith("The task broker is unreachable")
        assert "task_id" not in response.json()
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"].startswith("unreachable")
    engine = create_engine(task_settings.database_url)
    try:
        async with engine.connect() as connection:
            stored = (await connection.execute(text("SELECT count(*) FROM async_tasks"))).scalar_one()
    finally:
        await engine.dispose()
    assert stored == 0


async def test_a_task_longer_than_the_visibility_timeout_runs_once(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    # The visibility timeout is 6 s here; the generation takes 9 s. The running worker renews its lease, so the idle
    # second worker never gets the message.
    async with running_scripted_tgi(delay=9.0) as slow:
        await served_endpoint(registry, task_settings, "long", slow.port)
        workers.start()
        workers.start()
        task_id = await submit(gateway_client, "long", prompt="x", max_new_tokens=2)
        state = await wait_for_status(gateway_client, task_id, timeout=90)
    assert state["status"] == "SUCCESS", workers.logs()
    assert (slow.started, slow.completed) == (1, 1)


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_the_production_combination_postgres_and_redis(
    database_url: str, task_settings: Settings, workers: Workers
) -> None:
    settings = task_settings.model_copy(update={"database_url": database_url})
    engine = create_engine(database_url)
    try:
        registry = EndpointRegistry(create_session_factory(engine))
        async with running_instant_tgi() as upstream, gateway_for(settings) as client:
            await served_endpoint(registry, settings, "prod", upstream.port)
            workers.start(settings)
            task_ids = [await submit(client, "prod", prompt=f"p {i}", max_new_tokens=3) for i in range(5)]
            for task_id in task_ids:
                state = await wait_for_status(client, task_id)
                assert state["status"] == "SUCCESS", workers.logs()
                assert state["result"]["output"]["text"] == " the quick brown"
    finally:
        await engine.dispose()


@pytest.mark.parametrize("broker", ["redis"], indirect=True)
async def test_async_tasks_spend_their_owners_token_budget(
    broker: dict[str, str], registry: EndpointRegistry, task_settings: Settings, workers: Workers
) -> None:
    """The worker charges a finished task's generated tokens where the gateways count them (Redis)."""
    settings = task_settings.model_copy(update={"tenant_tokens_per_minute": 4})  # counters under the test's prefix
    async with running_instant_tgi() as upstream, gateway_for(settings) as client:
        await served_endpoint(registry, settings, "demo", upstream.port)
        workers.start(settings)
        task_id = await submit(client, "demo", max_new_tokens=4)
        state = await wait_for_status(client, task_id)
        assert state["status"] == "SUCCESS", workers.logs()

        async def refused() -> bool:
            response = await client.post(
                "/v1/llm/completions-async?model_endpoint_name=demo",
                json={"prompt": "again", "max_new_tokens": 1, "temperature": 0},
                headers={"x-api-key": "alice"},
            )
            return response.status_code == 429 and "tokens_per_minute" in response.json()["detail"]

        await eventually_async(refused, timeout=10, what="a 429 once the task's tokens were charged")
