"""One admission path: every way in answers the same status and the same words for the same problem.

Sync, stream and async submit go through the real gateway; the worker path runs the real Celery task function
(eagerly, in this process, against the same registry) the way a worker runs a message it took from the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.config import Settings
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint
from model_engine_server.orchestration.factory import build_upstream_resolver
from model_engine_server.tasks.celery_app import create_celery_app
from model_engine_server.tasks.completion_task import register_completion_task
from model_engine_server.tasks.errors import AsyncTaskFailure
from model_engine_server.tasks.runtime import WorkerRuntime
from tests.api.completion_support import loopback_settings

ALICE, BOB = "alice", "bob"
TOO_LONG = 2049  # smollm2-135m has a 2048-token context


@pytest.fixture
def task_settings(sqlite_url: str, tmp_path: Path) -> Settings:
    """The embedded broker; one attempt, so a task that cannot be admitted ends at once with the reason."""
    return loopback_settings(sqlite_url, tmp_path).model_copy(update={"async_task_max_attempts": 1})


@pytest.fixture
def worker(task_settings: Settings) -> Iterator[Any]:
    """The completion task of a worker process, bound to a real worker runtime; ``apply`` runs it here."""
    runtime = WorkerRuntime(task_settings, build_upstream_resolver(task_settings), concurrency=2)
    try:
        yield register_completion_task(create_celery_app(task_settings), runtime)
    finally:
        runtime.close()


async def endpoint_in(
    registry: EndpointRegistry, name: str, status: EndpointStatus, reason: str | None = None
) -> ModelEndpoint:
    endpoint = await registry.create(owner=ALICE, name=name, config=EndpointConfig(model_name="smollm2-135m"))
    if status is EndpointStatus.DELETE_IN_PROGRESS:
        return await registry.mark_deleting(name, ALICE)
    await registry.set_status(endpoint.id, endpoint.revision, status, reason)
    return endpoint


def body(max_new_tokens: int = 5) -> dict[str, Any]:
    return {"prompt": "hello", "max_new_tokens": max_new_tokens, "temperature": 0.0}


async def gateway_answers(
    client: httpx.AsyncClient, name: str, caller: str, max_new_tokens: int = 5
) -> dict[str, tuple[int, str]]:
    """(status, detail) of the sync, stream and async-submit routes for one request (no detail on success)."""
    answers = {}
    for path in ("sync", "stream", "async"):
        response = await client.post(
            f"/v1/llm/completions-{path}",
            params={"model_endpoint_name": name},
            json=body(max_new_tokens),
            headers={"x-api-key": caller},
        )
        answers[path] = (response.status_code, response.json().get("detail", ""))
    return answers


async def worker_answer(worker: Any, endpoint: ModelEndpoint, max_new_tokens: int = 5, **task: Any) -> tuple[str, str]:
    """What a worker makes of a queued task for ``endpoint``: its final state and the reason it shows the caller."""
    request = asdict(CompletionRequest(prompt="hello", max_new_tokens=max_new_tokens, temperature=0.0))
    kwargs = {"endpoint_id": endpoint.id, "endpoint_name": endpoint.name, "request": request, **task}
    result = await asyncio.to_thread(worker.apply, kwargs=kwargs)
    assert isinstance(result.result, AsyncTaskFailure), result.result
    return result.state, str(result.result)


async def test_every_path_gives_the_same_status_and_reason(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, worker: Any
) -> None:
    failed = await endpoint_in(registry, "failed", EndpointStatus.UPDATE_FAILED, "image pull error")
    deleting = await endpoint_in(registry, "deleting", EndpointStatus.DELETE_IN_PROGRESS)
    ready = await endpoint_in(registry, "ready", EndpointStatus.READY)
    vanished = await endpoint_in(registry, "vanished", EndpointStatus.READY)
    await registry.remove(vanished.id)  # the worker's "unknown": the endpoint went away after the task was queued

    cases = [
        # (endpoint, caller, max_new_tokens, status, detail)
        (vanished, ALICE, 5, 404, "Model endpoint 'vanished' was not found."),
        (ready, BOB, 5, 404, "Model endpoint 'ready' was not found."),  # someone else's private endpoint
        (failed, ALICE, 5, 503, "Model endpoint 'failed' is not ready (status UPDATE_FAILED): image pull error."),
        (deleting, ALICE, 5, 404, "Model endpoint 'deleting' is being deleted."),
        (
            ready,
            ALICE,
            TOO_LONG,
            400,
            "max_new_tokens (2049) exceeds the context length of smollm2-135m (2048 tokens).",
        ),
    ]
    for endpoint, caller, max_new_tokens, status, detail in cases:
        answers = await gateway_answers(gateway_client, endpoint.name, caller, max_new_tokens)
        assert answers == {"sync": (status, detail), "stream": (status, detail), "async": (status, detail)}
        if caller == ALICE:  # a queued task only exists for a caller the gateway admitted
            assert await worker_answer(worker, endpoint, max_new_tokens) == ("FAILURE", detail)


async def test_a_queued_request_may_wait_for_a_starting_endpoint_a_request_now_may_not(
    gateway_client: httpx.AsyncClient, registry: EndpointRegistry, worker: Any
) -> None:
    starting = await endpoint_in(registry, "starting", EndpointStatus.UPDATE_IN_PROGRESS, "loading weights")
    detail = "Model endpoint 'starting' is not ready (status UPDATE_IN_PROGRESS): loading weights."
    answers = await gateway_answers(gateway_client, "starting", ALICE)
    assert answers["sync"] == answers["stream"] == (503, detail)
    assert answers["async"][0] == 200  # queued: it runs once the endpoint is ready
    # A worker that takes the task before the endpoint is ready says the same (with retries left, it waits).
    assert await worker_answer(worker, starting) == ("FAILURE", detail)
    # READY without a ready replica (this machine runs none for it): the same reason on both paths that need one.
    await registry.set_status(starting.id, starting.revision, EndpointStatus.READY, None)
    no_replica = "Model endpoint 'starting' has no ready replica right now."
    answers = await gateway_answers(gateway_client, "starting", ALICE)
    assert answers["sync"] == answers["stream"] == (503, no_replica)
    assert await worker_answer(worker, starting) == ("FAILURE", no_replica)


async def test_a_task_whose_endpoint_did_not_wake_within_the_cold_start_bound_fails_with_the_gateways_reason(
    registry: EndpointRegistry, worker: Any, task_settings: Settings
) -> None:
    # READY at zero workers, and nothing on this machine will start a replica for it.
    config = EndpointConfig(model_name="smollm2-135m", min_workers=0)
    dozing = await registry.create(owner=ALICE, name="dozing", config=config)
    await registry.set_status(dozing.id, dozing.revision, EndpointStatus.READY, None)
    # The task first found it asleep longer ago than the bound (it came back to look, without holding a thread).
    long_ago = time.time() - task_settings.cold_start_timeout_seconds - 1
    reason = (
        "Model endpoint 'dozing' is waking up from zero workers and had no ready replica within "
        f"{task_settings.cold_start_timeout_seconds:.0f}s; try again shortly."
    )
    assert await worker_answer(worker, dozing, waking_since=long_ago) == ("FAILURE", reason)
