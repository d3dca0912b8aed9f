"""The gateway's side of waking an endpoint at zero workers, on its own: requests are held until a replica is ready
(native and OpenAI routes), report demand in the registry, and past the cold-start bound get a 503 with a reason and
``Retry-After``. The orchestrator's part is played by the test: it records a ready worker and routes to a server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from model_engine_server.domain.entities import EndpointStatus, ObservedState
from model_engine_server.testing import eventually_async
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import ALICE, RunningGateway, loopback_settings, running_gateway

BODY = {"prompt": "hello", "max_new_tokens": 3, "temperature": 0}


@pytest.fixture
async def tgi() -> AsyncIterator[InstantTgiServer]:
    async with running_instant_tgi() as server:
        yield server


@pytest.fixture
async def gateway(sqlite_url: str, tmp_path: Path) -> AsyncIterator[RunningGateway]:
    settings = loopback_settings(sqlite_url, tmp_path).model_copy(update={"cold_start_timeout_seconds": 2.0})
    async with running_gateway(settings) as running:
        await running.add_endpoint("napping", [], min_workers=0)  # READY at zero workers
        yield running


async def _wake(gateway: RunningGateway, name: str, upstream: str) -> None:
    """What the orchestrator does once demand is recorded: a worker becomes ready."""
    registry = gateway.app.state.services.endpoints
    endpoint = await registry.get_owned(name, ALICE[0])
    await eventually_async(lambda: registry.get_owned(name, ALICE[0]), lambda e: e.last_request_at is not None)
    assert await registry.record_observed(endpoint.id, endpoint.revision, ObservedState(EndpointStatus.READY, 1))
    gateway.resolver.routes[name] = [upstream]


async def test_native_and_openai_requests_are_held_until_a_replica_is_ready(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    async with gateway.client(auth=ALICE) as client:
        native = asyncio.create_task(
            client.post("/v1/llm/completions-sync", params={"model_endpoint_name": "napping"}, json=BODY)
        )
        openai = asyncio.create_task(
            client.post("/v1/completions", json={"model": "napping", "prompt": "hello", "max_tokens": 3})
        )
        await _wake(gateway, "napping", tgi.url)
        answers = await asyncio.gather(native, openai)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json()["output"]["num_completion_tokens"] == 3
    assert answers[1].json()["usage"]["completion_tokens"] == 3


async def test_a_held_stream_is_kept_alive_with_comments_then_streams_normally(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    params = {"model_endpoint_name": "napping"}
    async with (
        gateway.client(auth=ALICE) as client,
        client.stream("POST", "/v1/llm/completions-stream", params=params, json=BODY) as response,
    ):
        assert response.status_code == 200  # started while the endpoint is still at zero workers
        chunks = response.aiter_raw()
        assert await anext(chunks) == b": ping\n\n"  # the connection is kept alive while it waits
        await _wake(gateway, "napping", tgi.url)
        raw = b"".join([chunk async for chunk in chunks])
    lines = [line for line in raw.decode().splitlines() if line and line != ": ping"]
    events = [orjson.loads(line.removeprefix("data:")) for line in lines]
    assert [e["error"] for e in events] == [None] * 3 and events[-1]["output"]["finished"]


async def test_a_held_openai_stream_is_kept_alive_too(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    body = {"model": "napping", "prompt": "hello", "max_tokens": 3, "stream": True}
    async with (
        gateway.client(auth=ALICE) as client,
        client.stream("POST", "/v1/completions", json=body) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()
        assert await anext(chunks) == b": ping\n\n"
        await _wake(gateway, "napping", tgi.url)
        raw = b"".join([chunk async for chunk in chunks]).decode()
    data = [line.removeprefix("data: ") for line in raw.splitlines() if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    texts = [orjson.loads(chunk)["choices"][0]["text"] for chunk in data[:-1] if orjson.loads(chunk)["choices"]]
    assert len("".join(texts).split()) == 3


async def test_a_held_stream_past_the_bound_ends_with_an_error_event(gateway: RunningGateway) -> None:
    params = {"model_endpoint_name": "napping"}
    async with (
        gateway.client(auth=ALICE) as client,
        client.stream("POST", "/v1/llm/completions-stream", params=params, json=BODY) as response,
    ):
        lines = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert len(lines) == 1
    error = orjson.loads(lines[0][5:])["error"]
    assert error["status_code"] == 503 and "waking up" in error["content"]["error"]


async def test_past_the_cold_start_bound_a_request_gets_503_with_retry_after(gateway: RunningGateway) -> None:
    async with gateway.client(auth=ALICE) as client:
        native = await client.post("/v1/llm/completions-sync", params={"model_endpoint_name": "napping"}, json=BODY)
        openai = await client.post("/v1/completions", json={"model": "napping", "prompt": "hi", "max_tokens": 3})
    assert native.status_code == 503 and "waking up from zero workers" in native.json()["detail"]
    assert int(native.headers["Retry-After"]) > 0
    assert openai.status_code == 503 and int(openai.headers["Retry-After"]) > 0
    assert "waking up" in openai.json()["error"]["message"]
