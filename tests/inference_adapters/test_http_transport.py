"""The keep-alive transport under httpx.AsyncClient, against small real servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from model_engine_server.inference.http_transport import PooledTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + (await reader.readexactly(length) if length else b"")


def _answer(raw: bytes) -> Handler:
    """A handler that reads one request and writes ``raw`` (status line, headers and body) in reply."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()

    return handler


@contextlib.asynccontextmanager
async def _serve(handler: Handler) -> AsyncIterator[Server]:
    """A raw TCP server on loopback answering each connection with ``handler``; closed when the block ends."""
    state = Server()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state._writers.append(writer)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=PooledTransport(), timeout=5) as http:
        yield http


async def test_sequential_requests_share_one_connection(client: httpx.AsyncClient) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await _read_request(reader)
            body = request.split(b"\r\n\r\n", 1)[1]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async with _serve(echo) as state:
        for index in range(5):
            response = await client.post(state.url + "/x", content=b"hello %d" % index)
            assert response.status_code == 200
            assert response.content == b"hello %d" % index
        assert state.connections == 1


async def test_connection_closed_by_the_server_while_idle_is_replaced(client: httpx.AsyncClient) -> None:
    one_shot = _answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # keep-alive implied, then hang up

    async with _serve(one_shot) as state:
        for _ in range(3):
            assert (await client.post(state.url, content=b"x")).text == "ok"
        assert state.connections == 3


async def test_large_chunked_body_streams_through_in_order(client: httpx.AsyncClient) -> None:
    pieces = [bytes([65 + i % 26]) * 65536 for i in range(32)]  # 2 MiB: exercises read pausing

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with _serve(chunked) as state:
        async with client.stream("POST", state.url, content=b"x") as response:
            received = b"".join([chunk async for chunk in response.aiter_bytes()])
        assert received == b"".join(pieces)


async def test_only_plain_http_is_supported(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.get("https://127.0.0.1:1/")


async def test_body_delimited_by_connection_close(client: httpx.AsyncClient) -> None:
    legacy = _answer(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")

    async with _serve(legacy) as state:
        assert (await client.post(state.url, content=b"x")).text == "all of it"


async def test_server_hanging_up_mid_body_is_a_read_error(client: httpx.AsyncClient) -> None:
    truncated = _answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")

    async with _serve(truncated) as state:
        with pytest.raises(httpx.ReadError):
            await client.post(state.url, content=b"x")
