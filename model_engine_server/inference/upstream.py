"""The pooled HTTP client that sends completions to inference servers, used by the gateway and the Celery worker.

One client per process, on ``http_transport.PooledTransport``, keeps connections to every replica alive. Each
request goes to the replica ``routing.ReplicaRouter`` picks (least in flight from this process, or the one holding the
prompt's prefix), and a request the replica refused (connection refused, or reset before any byte came back) is
retried once on the next replica — nothing was processed, so that retry is safe. Every transport failure leaves here
as a domain error:

    connection refused twice / no replica        EndpointNotReadyError (503)
    connect, read or pool timeout                UpstreamTimeoutError (504)
    connection lost, malformed answer            UpstreamError (502)
    engine said 400/422, 429, 503, 5xx           see ``adapters.error_from_response``
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import orjson

from model_engine_server.config import Settings
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, StreamDelta
from model_engine_server.domain.exceptions import EndpointNotReadyError, UpstreamError, UpstreamTimeoutError
from model_engine_server.inference.adapters import EngineAdapter, error_from_response
from model_engine_server.inference.http_transport import PooledTransport
from model_engine_server.inference.routing import ReplicaRouter, Route

_JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}
_SSE_HEADERS = {"content-type": "application/json", "accept": "text/event-stream"}
MAX_ATTEMPTS = 2  # a request that could not be sent is retried once, on another replica


@dataclass(frozen=True)
class UpstreamPolicy:
    """Named timeouts and pool limits; write timeout and pool wait follow the connect timeout."""

    connect_timeout: float = 5.0
    read_timeout: float = 600.0  # between two bytes: a long generation streams, a sync one may think for minutes
    max_keepalive_connections: int = 256  # idle connections kept per inference server
    keepalive_expiry: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamPolicy:
        return cls(
            connect_timeout=settings.upstream_connect_timeout_seconds,
            read_timeout=settings.upstream_read_timeout_seconds,
        )


class UpstreamClient:
    """Create once (app lifespan, worker start), share, ``aclose()`` at shutdown.

    Requests go straight to an httpx transport (``httpx.Request`` in, ``httpx.Response`` out, httpx's exceptions)
    rather than through ``httpx.AsyncClient.send``: the client's redirect, auth, cookie and hook machinery, useless
    between the gateway and an inference server, cost more per request than the transport itself. Any
    ``httpx.AsyncBaseTransport`` can be passed in (tests use that).
    """

    def __init__(
        self,
        policy: UpstreamPolicy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        router: ReplicaRouter | None = None,
    ):
        self.policy = policy or UpstreamPolicy()
        self.router = router or ReplicaRouter()
        p = self.policy
        self._transport = transport or PooledTransport(
            max_idle_per_host=p.max_keepalive_connections, keepalive_expiry=p.keepalive_expiry
        )
        # httpx's per-request timeout extension; the transport applies it.
        self._timeouts = {
            "connect": p.connect_timeout,
            "read": p.read_timeout,
            "write": p.connect_timeout,
            "pool": p.connect_timeout,
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamClient:
        router = ReplicaRouter(
            settings.routing_policy,
            max_imbalance=settings.routing_max_imbalance,
            block_chars=settings.routing_prefix_block_chars,
            index_blocks=settings.routing_prefix_index_blocks,
            failure_cooldown=settings.routing_failure_cooldown_seconds,
        )
        return cls(UpstreamPolicy.from_settings(settings), router=router)

    async def aclose(self) -> None:
        await self._transport.aclose()

    def in_flight(self, base_url: str) -> int:
        """Requests this process has in flight to ``base_url`` right now."""
        return self.router.in_flight(base_url)

    def _route(self, upstreams: Sequence[str], prompt: str | None) -> Route:
        if not upstreams:
            raise EndpointNotReadyError("The endpoint has no ready replica.")
        return self.router.route(upstreams, prompt)

    @staticmethod
    def _attempts(route: Route) -> list[tuple[str, str]]:
        """(replica, why) for the first try and the one retry."""
        tries = route.order[:MAX_ATTEMPTS]
        return [(replica, route.reason if i == 0 else "retry") for i, replica in enumerate(tries)]

    async def _post(self, url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        request = httpx.Request("POST", url, content=content, headers=headers, extensions={"timeout": self._timeouts})
        return await self._transport.handle_async_request(request)

    async def complete(
        self, upstreams: Sequence[str], adapter: EngineAdapter, request: CompletionRequest
    ) -> CompletionOutput:
        """One completion from the least busy replica."""
        body = orjson.dumps(adapter.generate_body(request))
        raw = await self.post(upstreams, adapter.generate_path, body, prompt=request.prompt)
        return adapter.parse_generate(decode_json(raw), request)

    async def stream(
        self, upstreams: Sequence[str], adapter: EngineAdapter, request: CompletionRequest
    ) -> AsyncIterator[StreamDelta]:
        """Deltas as the engine produces them. Closing the iterator early closes the upstream connection, which is
        how inference servers learn to stop generating."""
        parser = adapter.stream_parser(request)
        body = orjson.dumps(adapter.stream_body(request))
        data_lines = self.stream_data(upstreams, adapter.stream_path, body, prompt=request.prompt)
        try:
            async for data in data_lines:
                for delta in parser.feed(data):
                    yield delta
        finally:
            await data_lines.aclose()
        for delta in parser.end():
            yield delta

    async def post(self, upstreams: Sequence[str], path: str, content: bytes, prompt: str | None = None) -> bytes:
        """The body of the chosen replica's 200 answer to ``POST path``; any other answer raises its error.
        ``prompt`` is the prompt text the engine will see, for prefix affinity (None: route on load alone)."""
        async with self._exchange(upstreams, path, content, _JSON_HEADERS, prompt) as response:
            raw = await response.aread()
        if response.status_code != 200:
            raise error_from_response(response.status_code, raw)
        return raw

    async def stream_data(
        self, upstreams: Sequence[str], path: str, content: bytes, prompt: str | None = None
    ) -> AsyncGenerator[str]:
        """The ``data:`` payloads of the chosen replica's event stream for ``POST path``. Closing the generator
        early closes the upstream connection."""
        async with self._exchange(upstreams, path, content, _SSE_HEADERS, prompt) as response:
            if response.status_code != 200:
                raise error_from_response(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                data = sse_data(line)
                if data is not None:
                    yield data

    @asynccontextmanager
    async def _exchange(
        self, upstreams: Sequence[str], path: str, content: bytes, headers: dict[str, str], prompt: str | None
    ) -> AsyncIterator[httpx.Response]:
        """The response of the first replica that takes the connection, counted in flight to it until the block
        ends, then closed. A refused connection moves on to the next replica (nothing was sent, so that retry is
        safe); any later transport failure leaves as a domain error."""
        route = self._route(upstreams, prompt)
        for base_url, reason in self._attempts(route):
            with self.router.sending(base_url, reason):
                try:
                    response = await self._post(base_url + path, content, headers)
                except httpx.ConnectError:
                    self.router.connection_failed(base_url)
                    continue
                except httpx.TransportError as exc:
                    raise _transport_error(exc) from exc
                self.router.connected(base_url, route)
                try:
                    yield response
                except httpx.TransportError as exc:
                    raise _transport_error(exc) from exc
                finally:
                    await response.aclose()
                return
        raise EndpointNotReadyError("No replica of the endpoint accepted a connection.")


def decode_json(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The model server answered with invalid JSON.") from exc


def sse_data(line: str) -> str | None:
    """The payload of an SSE ``data:`` line; ``None`` for comments, other fields and blank separators."""
    if not line.startswith("data:"):
        return None
    return line[6:] if line.startswith("data: ") else line[5:]


def _transport_error(exc: httpx.TransportError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeoutError(f"The model server did not answer in time ({type(exc).__name__}).")
    return UpstreamError(f"The connection to the model server failed: {type(exc).__name__}.")
