"""The only module that touches the network: one retry loop per face (sync, async) around httpx.

Everything else — what to send, how to read the answer, whether and when to retry — is decided by the I/O-free
core (``llmengine._core``) and by ``_Exchange`` below, which both faces share; each face only sends and sleeps.

Clients: a user-supplied ``httpx.Client`` / ``httpx.AsyncClient`` (``api_engine.set_http_client`` /
``set_async_http_client``) is used as given and never closed here. Otherwise the SDK pools its own: one sync
client for the process (rebuilt in a forked child) and one async client per event loop, because an httpx
AsyncClient belongs to the loop it was first used on.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from llmengine import api_engine
from llmengine._constants import CONNECT_TIMEOUT, DEFAULT_TIMEOUT
from llmengine._core.request_specs import RequestSpec, auth_headers, build_url
from llmengine._core.responses import ModelT, error_from_response, parse_body, retry_after_seconds
from llmengine._core.retry import Failure
from llmengine._core.sse import SSEDecoder
from llmengine._version import __version__
from llmengine.errors import APIConnectionError, APITimeoutError, LLMEngineError

_USER_AGENT = f"llmengine-python/{__version__}"
# Retries are logged at INFO so a slow call can be explained; URLs only, never headers (they carry the key).
log = logging.getLogger("llmengine")

_lock = threading.Lock()
_sync_client: httpx.Client | None = None
# Per event loop: its client, and the started async generator that closes the client when the loop shuts down.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[httpx.AsyncClient, AsyncGenerator[None, None]]
] = weakref.WeakKeyDictionary()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading CA certificates costs tens of milliseconds: do it once for every client the SDK makes.
    return httpx.create_ssl_context()


def _default_timeout() -> httpx.Timeout:
    return httpx.Timeout(DEFAULT_TIMEOUT, connect=CONNECT_TIMEOUT)


def sync_client() -> httpx.Client:
    """The user's client if one is set, else the SDK's shared pool (created on first use, never at import)."""
    global _sync_client
    given = api_engine.get_http_client()
    if given is not None:
        return given
    with _lock:
        if _sync_client is None or _sync_client.is_closed:
            _sync_client = httpx.Client(verify=_ssl_context(), timeout=_default_timeout())
        return _sync_client


async def async_client() -> httpx.AsyncClient:
    """The user's async client if one is set, else the SDK's pool for the running event loop."""
    given = api_engine.get_async_http_client()
    if given is not None:
        return given
    loop = asyncio.get_running_loop()
    pooled = _async_clients.get(loop)
    if pooled is not None and not pooled[0].is_closed:
        return pooled[0]
    client = httpx.AsyncClient(verify=_ssl_context(), timeout=_default_timeout())
    closer = _close_with_loop(client)
    await closer.__anext__()  # started: asyncio now closes it (and so the client) when the loop shuts down
    _async_clients[loop] = (client, closer)
    return client


async def _close_with_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    # asyncio.run (and every asyncio.Runner) finalizes suspended async generators before closing its loop, which is
    # the last moment the pool's sockets can be closed in the loop they belong to.
    try:
        yield
    finally:
        await client.aclose()


def close_connections() -> None:
    """Close the SDK's own sync pool (a new one is made on the next call); async pools close with their loop."""
    global _sync_client
    with _lock:
        if _sync_client is not None:
            _sync_client.close()
            _sync_client = None


async def aclose_connections() -> None:
    """Close the SDK's async pool of the running event loop now, rather than when the loop shuts down."""
    pooled = _async_clients.pop(asyncio.get_running_loop(), None)
    if pooled is not None:
        await pooled[1].aclose()


def _forget_inherited_clients() -> None:
    # A forked child must not share the parent's pooled sockets; it builds its own pool on first use.
    global _lock, _sync_client
    _lock = threading.Lock()
    _sync_client = None
    _async_clients.clear()


atexit.register(close_connections)
os.register_at_fork(after_in_child=_forget_inherited_clients)


class _Exchange:
    """One logical request and its retries: what each attempt sends, and what to do after it failed."""

    def __init__(self, spec: RequestSpec, *, stream: bool) -> None:
        self.spec = spec
        self.stream = stream
        self.url = build_url(api_engine.get_base_path(), spec.path)
        self.policy = api_engine.get_retry_policy()
        self.retries = 0

    def build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {**auth_headers(api_engine.get_api_key()), "user-agent": _USER_AGENT}
        if self.stream:
            headers["accept"] = "text/event-stream"
        # The call's timeout bounds each read; connecting keeps the client's own (shorter) bound.
        seconds = self.spec.timeout
        connect = client.timeout.connect
        timeout = httpx.Timeout(seconds, connect=seconds if connect is None else min(connect, seconds))
        return client.build_request(
            self.spec.method,
            self.url,
            params=dict(self.spec.params),
            json=self.spec.json,
            headers={**headers, **self.spec.headers},
            timeout=timeout,
        )

    def delay_after_status(self, response: httpx.Response) -> float:
        """Seconds to wait before trying again after an error answer (its body read); raises when giving up."""
        if not self.policy.should_retry_status(response.status_code, self.retries):
            raise error_from_response(response.status_code, response.content)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return self._next_delay(retry_after, f"HTTP {response.status_code}")

    def delay_after_failure(self, exc: httpx.TransportError) -> float:
        """Seconds to wait before trying again after no answer at all; raises the typed error when giving up."""
        failure = _classify(exc)
        if not self.policy.should_retry_failure(failure, idempotent=self.spec.idempotent, attempt=self.retries):
            raise self.translate(exc) from exc
        return self._next_delay(None, type(exc).__name__)

    def _next_delay(self, retry_after: float | None, cause: str) -> float:
        delay = self.policy.delay(self.retries, retry_after=retry_after)
        self.retries += 1
        log.info(
            "%s %s: %s, retry %d/%d in %.2fs",
            self.spec.method,
            self.url,
            cause,
            self.retries,
            self.policy.max_retries,
            delay,
        )
        return delay

    def translate(self, exc: httpx.TransportError) -> LLMEngineError:
        return translate_transport_error(exc, self.url, self.spec.timeout)


def _classify(exc: httpx.TransportError) -> Failure:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure.NOT_SENT
    return Failure.NO_ANSWER


def translate_transport_error(exc: httpx.TransportError, url: str, timeout: float) -> LLMEngineError:
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"no response from {url} within {timeout}s ({type(exc).__name__})")
    reason = str(exc) or type(exc).__name__
    return APIConnectionError(f"could not reach the LLM Engine gateway at {url}: {reason}")


# --- the sync face -------------------------------------------------------------------------------------------------


def _send(spec: RequestSpec, *, stream: bool) -> tuple[httpx.Response, _Exchange]:
    """The first 2xx answer to ``spec`` (retrying per policy); with ``stream`` its body is still unread."""
    exchange = _Exchange(spec, stream=stream)
    client = sync_client()
    while True:
        try:
            response = client.send(exchange.build(client), stream=stream)
            if response.is_success:
                return response, exchange
            try:
                response.read()  # an error before the first event is an ordinary JSON error body
            finally:
                response.close()
        except httpx.TransportError as exc:
            time.sleep(exchange.delay_after_failure(exc))
            continue
        time.sleep(exchange.delay_after_status(response))


def request(spec: RequestSpec) -> bytes:
    """Send ``spec`` and return the body of its 2xx answer; errors raise the ``llmengine.errors`` types."""
    return _send(spec, stream=False)[0].content


def request_model(method: str, path: str, model: type[ModelT], timeout: float = DEFAULT_TIMEOUT, **spec: Any) -> ModelT:
    """Send a request (``spec``: ``json``, ``params``, ``headers``) and parse its 2xx answer as ``model``."""
    return parse_body(request(RequestSpec(method, path, timeout, **spec)), model)


def stream_events(spec: RequestSpec) -> Generator[str, None, None]:
    """The data of each server-sent event, as it arrives; the connection is closed however iteration ends."""
    response, exchange = _send(spec, stream=True)
    decoder = SSEDecoder()
    try:
        for chunk in response.iter_bytes():
            yield from decoder.feed(chunk)
        yield from decoder.flush()
    except httpx.TransportError as exc:
        raise exchange.translate(exc) from exc
    finally:
        response.close()


# --- the async face: the same steps, awaited -----------------------------------------------------------------------


async def _asend(spec: RequestSpec, *, stream: bool) -> tuple[httpx.Response, _Exchange]:
    exchange = _Exchange(spec, stream=stream)
    client = await async_client()
    while True:
        try:
            response = await client.send(exchange.build(client), stream=stream)
            if response.is_success:
                return response, exchange
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            await asyncio.sleep(exchange.delay_after_failure(exc))
            continue
        await asyncio.sleep(exchange.delay_after_status(response))


async def arequest(spec: RequestSpec) -> bytes:
    return (await _asend(spec, stream=False))[0].content


async def astream_events(spec: RequestSpec) -> AsyncGenerator[str, None]:
    response, exchange = await _asend(spec, stream=True)
    decoder = SSEDecoder()
    try:
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                yield event
        for event in decoder.flush():
            yield event
    except httpx.TransportError as exc:
        raise exchange.translate(exc) from exc
    finally:
        await response.aclose()
