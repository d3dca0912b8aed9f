"""A lean HTTP/1.1 keep-alive transport for ``httpx.AsyncClient``, used for gateway → inference-server traffic.

Why not httpx's default (httpcore) pool: on every request it walks all pooled connections, polling each socket and
counting idle ones inside that walk, so its cost grows with the number of connections (quadratically in places). At
the concurrency a gateway runs at, that alone cost more than the whole rest of a proxied request (see
``docs/benchmarks.md``). This transport keeps idle connections per host in a LIFO stack, so taking one is O(1), and
parses responses with httptools (the parser uvicorn uses).

Scope, deliberately small: plain HTTP/1.1 to inference servers on the cluster network (no TLS, no proxies, no HTTP/2),
one request per connection at a time, request bodies given as bytes. Response bodies stream; closing a response
before its end closes the connection, which is how an inference server learns that a stream was abandoned. Failures
are raised as httpx's own exceptions, so callers handle them like any httpx error.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast

import httptools
import httpx

_PAUSE_BYTES = 256 * 1024  # stop reading from the socket while this much response body waits unconsumed


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request/response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None

    # --- asyncio callbacks ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"Invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and exc is None and self._delimited_by_close():
            self.complete = True  # HTTP/1.0 style: no length and not chunked, the body ends with the connection
            self._wake()
        if not self.complete:
            self._fail(httpx.ReadError(f"Server disconnected: {exc}" if exc else "Server disconnected."))

    def _delimited_by_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    # --- httptools callbacks ---
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()  # only meaningful here, not after the message ends
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _PAUSE_BYTES and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- used by the transport ---
    def send(self, raw: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(raw)

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    async def read_headers(self, timeout: float | None) -> None:
        while not self.headers_done:
            await self._wait(timeout)

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """The next piece of body, or None at its end."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _PAUSE_BYTES // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            await self._wait(timeout)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("Timed out waiting for the server's response.") from None
        finally:
            self._waiter = None
        # A failure that woke us is raised by the caller's next _wait, after any body that arrived before it.


class _ResponseBody(httpx.AsyncByteStream):
    def __init__(self, pool: PooledTransport, key: tuple[str, int], connection: _Connection, timeout: float | None):
        self._pool = pool
        self._key = key
        self._connection = connection
        self._timeout = timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._connection.next_chunk(self._timeout)) is not None:
            yield chunk

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._key, self._connection)


class PooledTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_idle_per_host: int = 256, keepalive_expiry: float = 30.0) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle_per_host
        self._expiry = keepalive_expiry
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"Only plain http:// is supported here, not {request.url.scheme!r}.")
        timeouts = request.extensions.get("timeout", {})
        key = (request.url.host, request.url.port or 80)
        raw = _serialise(request, await request.aread())
        for attempt in (0, 1):
            connection, reused = await self._acquire(key, timeouts.get("connect"))
            try:
                connection.send(raw)
                await connection.read_headers(timeouts.get("read"))
            except (httpx.ReadError, httpx.RemoteProtocolError):
                connection.close()
                self._open.discard(connection)
                # A kept-alive connection the server had just closed: nothing was processed, a fresh one may retry.
                if attempt == 0 and reused and not connection.received_any:
                    continue
                if not connection.received_any:  # reset before answering: to the caller, a refused request
                    raise httpx.ConnectError(f"{key[0]}:{key[1]} closed the connection without answering.") from None
                raise
            except BaseException:
                connection.close()
                self._open.discard(connection)
                raise
            body = _ResponseBody(self, key, connection, timeouts.get("read"))
            return httpx.Response(
                connection.status, headers=connection.headers, stream=body, extensions={"http_version": b"HTTP/1.1"}
            )
        raise AssertionError("unreachable")

    async def _acquire(self, key: tuple[str, int], timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._expiry:
                return connection, True
            connection.close()
            self._open.discard(connection)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(_Connection, key[0], key[1])
        except TimeoutError:
            raise httpx.ConnectTimeout(f"Timed out connecting to {key[0]}:{key[1]}.") from None
        except OSError as exc:
            raise httpx.ConnectError(f"Cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        self._open.add(connection)
        return connection, False

    def release(self, key: tuple[str, int], connection: _Connection) -> None:
        """Back to the idle stack if the response was read to its end and the server keeps the connection."""
        idle = self._idle.setdefault(key, [])
        if connection.reusable and len(idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.close()
            self._open.discard(connection)

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()


def _serialise(request: httpx.Request, body: bytes) -> bytes:
    head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
    head.extend(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
    if body and "content-length" not in request.headers:
        head.append(b"content-length: %d\r\n" % len(body))
    head.append(b"\r\n")
    return b"".join(head) + body
