"""The pooled upstream client against real servers on loopback: replica choice, failures, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from model_engine_server.config import RoutingPolicy, Settings
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.exceptions import EndpointNotReadyError, UpstreamError, UpstreamTimeoutError
from model_engine_server.inference.adapters import TgiAdapter
from model_engine_server.inference.routing import ReplicaRouter
from model_engine_server.inference.upstream import UpstreamClient, UpstreamPolicy, sse_data
from model_engine_server.testing import free_port
from model_engine_server.testing.tgi import running_instant_tgi
from tests.api.completion_support import wait_until

ADAPTER = TgiAdapter()
REQUEST = CompletionRequest(prompt="x", max_new_tokens=3, temperature=0.0)


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient(UpstreamPolicy(connect_timeout=1.0, read_timeout=0.5))
    yield upstream
    await upstream.aclose()


def test_policy_reads_the_timeouts_from_settings() -> None:
    settings = Settings(upstream_connect_timeout_seconds=2.5, upstream_read_timeout_seconds=42)
    policy = UpstreamClient.from_settings(settings).policy
    assert (policy.connect_timeout, policy.read_timeout) == (2.5, 42)


def test_sse_data_lines() -> None:
    assert sse_data('data: {"a": 1}') == '{"a": 1}'
    assert sse_data('data:{"a": 1}') == '{"a": 1}'
    assert sse_data(": ping") is None
    assert sse_data("") is None
    assert sse_data("event: x") is None


async def test_complete_and_stream_against_a_tgi_server(client: UpstreamClient) -> None:
    async with running_instant_tgi() as server:
        output = await client.complete([server.url], ADAPTER, REQUEST)
        deltas = [delta async for delta in client.stream([server.url], ADAPTER, REQUEST)]
    assert output.text == "".join(delta.text for delta in deltas) == " the quick brown"
    assert deltas[-1].finished and deltas[-1].num_completion_tokens == 3
    assert client.in_flight(server.url) == 0


async def test_idle_replicas_take_turns(client: UpstreamClient) -> None:
    async with running_instant_tgi() as a, running_instant_tgi() as b:
        for _ in range(6):
            await client.complete([a.url, b.url], ADAPTER, REQUEST)
    assert (a.served, b.served) == (3, 3)


async def test_busy_replica_is_avoided_until_its_stream_ends(client: UpstreamClient) -> None:
    async with running_instant_tgi(token_delay=0.05) as a, running_instant_tgi(token_delay=0.05) as b:
        long = CompletionRequest(prompt="x", max_new_tokens=100, temperature=0.0)
        stream = client.stream([a.url, b.url], ADAPTER, long)
        await anext(stream)
        busy, other = (a, b) if client.in_flight(a.url) else (b, a)
        for _ in range(4):
            await client.complete([a.url, b.url], ADAPTER, REQUEST)
        assert (busy.served, other.served) == (0, 4)
        await stream.aclose()  # closing early cancels the generation upstream
        await wait_until(lambda: busy.cancelled == 1)
        assert client.in_flight(busy.url) == 0


async def test_refused_connection_tries_the_next_replica(client: UpstreamClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with running_instant_tgi() as server:
        for _ in range(3):
            assert (await client.complete([dead, server.url], ADAPTER, REQUEST)).text
        assert [d.text async for d in client.stream([dead, server.url], ADAPTER, REQUEST)][0] == " the"
    with pytest.raises(EndpointNotReadyError, match="accepted a connection"):
        await client.complete([dead], ADAPTER, REQUEST)
    with pytest.raises(EndpointNotReadyError, match="no ready replica"):
        await client.complete([], ADAPTER, REQUEST)


async def test_silent_server_times_out(client: UpstreamClient) -> None:
    release = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(UpstreamTimeoutError, match="did not answer in time"):
            await client.complete([url], ADAPTER, REQUEST)
        with pytest.raises(UpstreamTimeoutError):
            await anext(client.stream([url], ADAPTER, REQUEST))
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert client.in_flight(url) == 0


async def test_connection_dropped_mid_answer_is_an_upstream_error(client: UpstreamClient) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(UpstreamError, match="connection to the model server failed"):
            await client.complete([url], ADAPTER, REQUEST)
    finally:
        server.close()
        await server.wait_closed()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_request_is_retried_once_and_a_refusing_replica_is_then_skipped(client: UpstreamClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    retries_before = _sample("llm_engine_replica_retries_total", replica=dead)
    async with running_instant_tgi() as server:
        # idle replicas take turns, so some request tries the dead one first: it is retried on the live one
        for _ in range(4):
            assert (await client.complete([dead, server.url], ADAPTER, REQUEST)).text
        assert server.served == 4
    assert _sample("llm_engine_replica_retries_total", replica=dead) == retries_before + 1  # skipped afterwards
    assert _sample("llm_engine_replica_chosen_total", replica=server.url, reason="retry") >= 1


async def test_only_one_retry(client: UpstreamClient) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    before = sum(_sample("llm_engine_replica_retries_total", replica=url) for url in dead)
    with pytest.raises(EndpointNotReadyError, match="accepted a connection"):
        await client.complete(dead, ADAPTER, REQUEST)
    assert sum(_sample("llm_engine_replica_retries_total", replica=url) for url in dead) == before + 2


async def test_a_replica_resetting_before_answering_is_retried_on_another(client: UpstreamClient) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.transport.abort()  # RST without a byte of answer, as a crashing server does

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    broken = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with running_instant_tgi() as healthy:
            for _ in range(2):
                assert (await client.complete([broken, healthy.url], ADAPTER, REQUEST)).text
            assert [d.text async for d in client.stream([broken, healthy.url], ADAPTER, REQUEST)][0] == " the"
        assert healthy.served == 3
    finally:
        server.close()
        await server.wait_closed()


async def test_prefix_affinity_keeps_a_conversation_on_one_replica() -> None:
    router = ReplicaRouter(RoutingPolicy.PREFIX_AFFINITY, block_chars=16)
    upstream = UpstreamClient(UpstreamPolicy(connect_timeout=1.0, read_timeout=5.0), router=router)
    system = "You are a pirate. Answer every question as a pirate would. "
    try:
        async with running_instant_tgi() as a, running_instant_tgi() as b:
            for turn in range(6):
                prompt = CompletionRequest(prompt=f"{system}Question {turn}?", max_new_tokens=3, temperature=0.0)
                await upstream.complete([a.url, b.url], ADAPTER, prompt)
            assert sorted((a.served, b.served)) == [0, 6]
    finally:
        await upstream.aclose()
