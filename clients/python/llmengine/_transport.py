"""The only module that touches the network: httpx, in sync and async twins, with the retry loop around each call.

Everything else — what to send, how to read the answer, whether and when to retry — is decided by the I/O-free
core (``llmengine._core``); this module just carries it out. The sync client is shared (connection pooling) and
created on first use, never at import; async calls get a client per call, because an httpx AsyncClient belongs to
the event loop it was first used on.
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
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx

from llmengine._constants import CONNECT_TIMEOUT
from llmengine._core.request_specs import RequestSpec, auth_headers, build_url
from llmengine._core.responses import error_from_response, retry_after_seconds
from llmengine._core.retry import Failure
from llmengine._core.sse import SSEDecoder
from llmengine._version import __version__
from llmengine.api_engine import get_api_key, get_base_path, get_retry_policy
from llmengine.errors import APIConnectionError, APITimeoutError, LLMEngineError

_USER_AGENT = f"llmengine-python/{__version__}"
# Retries are logged at INFO so a slow call can be explained; URLs only, never headers (they carry the key).
log = logging.getLogger("llmengine")

_client_lock = threading.Lock()
_sync_client: httpx.Client | None = None


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading CA certificates costs tens of milliseconds: do it once, not for every async call's client.
    return httpx.create_ssl_context()


def _shared_client() -> httpx.Client:
    global _sync_client
    with _client_lock:
        if _sync_client is None or _sync_client.is_closed:
            _sync_client = httpx.Client(verify=_ssl_context())
        return _sync_client


def close_connections() -> None:
    """Close the pooled connections of the sync client (a new pool is made on the next call)."""
    global _sync_client
    with _client_lock:
        if _sync_client is not None:
            _sync_client.close()
            _sync_client = None


def _forget_inherited_client() -> None:
    # A forked child must not share the parent's pooled sockets; it builds its own pool on first use.
    global _client_lock, _sync_client
    _client_lock = threading.Lock()
    _sync_client = None


atexit.register(close_connections)
os.register_at_fork(after_in_child=_forget_inherited_client)


class _Attempts:
    """Retry bookkeeping for one logical request, shared by the sync and async twins."""

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        self.url = build_url(get_base_path(), spec.path)
        self.policy = get_retry_policy()
        self.retries = 0

    def headers(self, *, stream: bool) -> dict[str, str]:
        headers = {**auth_headers(get_api_key()), "user-agent": _USER_AGENT}
        if stream:
            headers["accept"] = "text/event-stream"
        return {**headers, **self.spec.headers}

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.spec.timeout, connect=min(CONNECT_TIMEOUT, self.spec.timeout))

    def delay_after_status(self, response: httpx.Response) -> float | None:
        """Seconds to wait before trying again, or None to give up and raise."""
        if not self.policy.should_retry_status(response.status_code, self.retries):
            return None
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return self._next_delay(retry_after, f"HTTP {response.status_code}")

    def delay_after_failure(self, exc: httpx.TransportError) -> float | None:
        failure = _classify(exc)
        if not self.policy.should_retry_failure(failure, idempotent=self.spec.idempotent, attempt=self.retries):
            return None
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


# --- sync ----------------------------------------------------------------------------------------------------------


def request(spec: RequestSpec) -> bytes:
    """Send ``spec`` (retrying per policy) and return the body of its 2xx answer; errors raise typed exceptions."""
    attempts = _Attempts(spec)
    client = _shared_client()
    while True:
        try:
            response = client.request(
                spec.method,
                attempts.url,
                params=dict(spec.params),
                json=spec.json,
                headers=attempts.headers(stream=False),
                timeout=attempts.timeout(),
            )
        except httpx.TransportError as exc:
            delay = attempts.delay_after_failure(exc)
            if delay is None:
                raise attempts.translate(exc) from exc
            time.sleep(delay)
            continue
        if response.is_success:
            return response.content
        delay = attempts.delay_after_status(response)
        if delay is None:
            raise error_from_response(response.status_code, response.content)
        time.sleep(delay)


@contextmanager
def _open_stream(spec: RequestSpec) -> Iterator[tuple[httpx.Response, _Attempts]]:
    attempts = _Attempts(spec)
    client = _shared_client()
    while True:
        outgoing = client.build_request(
            spec.method,
            attempts.url,
            params=dict(spec.params),
            json=spec.json,
            headers=attempts.headers(stream=True),
            timeout=attempts.timeout(),
        )
        try:
            response = client.send(outgoing, stream=True)
        except httpx.TransportError as exc:
            delay = attempts.delay_after_failure(exc)
            if delay is None:
                raise attempts.translate(exc) from exc
            time.sleep(delay)
            continue
        if response.is_success:
            break
        # Errors before the first event are ordinary HTTP errors with a JSON body.
        try:
            response.read()
        finally:
            response.close()
        delay = attempts.delay_after_status(response)
        if delay is None:
            raise error_from_response(response.status_code, response.content)
        time.sleep(delay)
    try:
        yield response, attempts
    finally:
        response.close()


def stream_events(spec: RequestSpec) -> Generator[str, None, None]:
    """The data of each server-sent event, as it arrives; the connection is closed however iteration ends."""
    decoder = SSEDecoder()
    with _open_stream(spec) as (response, attempts):
        try:
            for chunk in response.iter_bytes():
                yield from decoder.feed(chunk)
        except httpx.TransportError as exc:
            raise attempts.translate(exc) from exc
        yield from decoder.flush()


# --- async ---------------------------------------------------------------------------------------------------------


def _async_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=_ssl_context())


async def arequest(spec: RequestSpec) -> bytes:
    """The async twin of ``request``."""
    attempts = _Attempts(spec)
    async with _async_client() as client:
        while True:
            try:
                response = await client.request(
                    spec.method,
                    attempts.url,
                    params=dict(spec.params),
                    json=spec.json,
                    headers=attempts.headers(stream=False),
                    timeout=attempts.timeout(),
                )
            except httpx.TransportError as exc:
                delay = attempts.delay_after_failure(exc)
                if delay is None:
                    raise attempts.translate(exc) from exc
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                return response.content
            delay = attempts.delay_after_status(response)
            if delay is None:
                raise error_from_response(response.status_code, response.content)
            await asyncio.sleep(delay)


@asynccontextmanager
async def _aopen_stream(spec: RequestSpec) -> AsyncIterator[tuple[httpx.Response, _Attempts]]:
    attempts = _Attempts(spec)
    async with _async_client() as client:
        while True:
            outgoing = client.build_request(
                spec.method,
                attempts.url,
                params=dict(spec.params),
                json=spec.json,
                headers=attempts.headers(stream=True),
                timeout=attempts.timeout(),
            )
            try:
                response = await client.send(outgoing, stream=True)
            except httpx.TransportError as exc:
                delay = attempts.delay_after_failure(exc)
                if delay is None:
                    raise attempts.translate(exc) from exc
                await asyncio.sleep(delay)
                continue
            if response.is_success:
                break
            try:
                await response.aread()
            finally:
                await response.aclose()
            delay = attempts.delay_after_status(response)
            if delay is None:
                raise error_from_response(response.status_code, response.content)
            await asyncio.sleep(delay)
        try:
            yield response, attempts
        finally:
            await response.aclose()


async def astream_events(spec: RequestSpec) -> AsyncGenerator[str, None]:
    """The async twin of ``stream_events``."""
    decoder = SSEDecoder()
    async with _aopen_stream(spec) as (response, attempts):
        try:
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    yield event
        except httpx.TransportError as exc:
            raise attempts.translate(exc) from exc
        for event in decoder.flush():
            yield event
