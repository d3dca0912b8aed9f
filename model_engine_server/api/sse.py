"""The streaming proxy: engine deltas in, Server-Sent Events out, with one lifecycle per stream.

    stream_when_admitted     a request held while its endpoint wakes from zero gets ``: ping`` comments meanwhile
    open_completion_stream   waits for the first delta; anything that fails before it is an ordinary HTTP error
    first delta              time-to-first-token is recorded, the response (status 200) starts
    each delta               one ``data:`` event, written as soon as it arrives (no buffering)
    quiet upstream           a ``: ping`` comment every ``ping_seconds`` keeps proxies from closing the connection
    upstream error           one in-band error event, then the stream ends
    client disconnect        Starlette cancels the body iterator; the reader task is cancelled, which closes the
                             upstream connection, which is how the inference server learns to stop generating
    finally                  metrics (outcome, latency, in-flight) are recorded exactly once

The same lifecycle serves the OpenAI routes: a ``StreamFormat`` says how items, errors and the end are written.

A reader task owns the upstream iterator and hands deltas over a small queue, so waiting for the next delta can time
out (for the ping) without cancelling the upstream read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import orjson
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from model_engine_server.api.completion_metrics import RequestObservation
from model_engine_server.api.errors import status_for
from model_engine_server.domain.completions import StreamDelta
from model_engine_server.domain.exceptions import DomainError, UpstreamError

logger = logging.getLogger(__name__)

PING = b": ping\n\n"
DEFAULT_PING_SECONDS = 15.0
HOLD_GRACE_SECONDS = 1.0  # a stream still not admitted after this waits for its endpoint to wake: ping meanwhile
_END = object()  # the reader's "upstream finished" marker
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}  # the latter stops nginx from buffering
Item = TypeVar("Item")
ItemContra = TypeVar("ItemContra", contravariant=True)
Admitted = TypeVar("Admitted")


class StreamFormat(Protocol[ItemContra]):
    """How one protocol writes a stream: each item, the in-band error after the first event, and the end."""

    def event(self, item: ItemContra) -> bytes: ...

    def is_last(self, item: ItemContra) -> bool: ...

    def error(self, status_code: int, message: str) -> bytes: ...

    def end(self) -> bytes: ...


def delta_payload(delta: StreamDelta) -> dict[str, object]:
    """Our wire form of one delta: counts only on the last event, ``token`` only when log-probs were asked for."""
    output: dict[str, object] = {"text": delta.text, "finished": delta.finished}
    if delta.finished:
        output["num_prompt_tokens"] = delta.num_prompt_tokens
        output["num_completion_tokens"] = delta.num_completion_tokens
    if delta.token is not None:
        output["token"] = {"token": delta.token.token, "log_prob": delta.token.log_prob}
    return output


def data_event(request_id: str, delta: StreamDelta) -> bytes:
    return b"data: " + orjson.dumps({"request_id": request_id, "output": delta_payload(delta), "error": None}) + b"\n\n"


def error_event(request_id: str, status_code: int, message: str) -> bytes:
    error = {
        "status_code": status_code,
        "content": {"error": message, "timestamp": datetime.now(UTC).isoformat()},
    }
    return b"data: " + orjson.dumps({"request_id": request_id, "output": None, "error": error}) + b"\n\n"


class NativeFormat:
    """``/v1/llm/completions-stream``: one event per delta, no end marker; token counts go to the metrics."""

    def __init__(self, request_id: str, observation: RequestObservation) -> None:
        self._request_id = request_id
        self.observation = observation

    def event(self, item: StreamDelta) -> bytes:
        if item.finished:
            self.observation.tokens(item.num_prompt_tokens, item.num_completion_tokens)
        return data_event(self._request_id, item)

    def is_last(self, item: StreamDelta) -> bool:
        return item.finished

    def error(self, status_code: int, message: str) -> bytes:
        return error_event(self._request_id, status_code, message)

    def end(self) -> bytes:
        return b""


async def open_completion_stream(
    request_id: str,
    deltas: AsyncIterator[StreamDelta],
    observation: RequestObservation,
    *,
    ping_seconds: float = DEFAULT_PING_SECONDS,
) -> StreamingResponse:
    """Start the SSE response once the engine produced its first delta; errors before that propagate (→ HTTP)."""
    return await open_event_stream(deltas, NativeFormat(request_id, observation), observation, ping_seconds)


async def open_event_stream(
    deltas: AsyncIterator[Item],
    stream_format: StreamFormat[Item],
    observation: RequestObservation,
    ping_seconds: float = DEFAULT_PING_SECONDS,
) -> StreamingResponse:
    """Start the SSE response once the engine produced its first item; errors before that propagate (→ HTTP)."""
    try:
        first = await anext(deltas)
    except StopAsyncIteration:
        observation.finish("502")
        raise UpstreamError("The model server ended the stream without any output.") from None
    except DomainError as exc:
        observation.finish(str(status_for(exc)))
        await _close(deltas)
        raise
    except BaseException:
        observation.finish("client_disconnected")
        await _close(deltas)
        raise
    observation.first_token()
    proxy = _StreamProxy(stream_format, first, deltas, observation, ping_seconds)
    # The background task closes the upstream even if the response is torn down before the body iterator starts.
    return StreamingResponse(
        proxy.events(), media_type="text/event-stream", headers=SSE_HEADERS, background=BackgroundTask(proxy.close)
    )


async def stream_when_admitted(
    admitting: Awaitable[Admitted],
    start: Callable[[Admitted], Awaitable[StreamingResponse]],
    error: Callable[[int, str], bytes],
    ping_seconds: float = DEFAULT_PING_SECONDS,
) -> StreamingResponse:
    """``start`` the stream once the request is admitted. Admission that takes longer than ``HOLD_GRACE_SECONDS``
    is waiting for an endpoint to wake from zero workers: the response starts with ``: ping`` comments, so clients
    and proxies keep the connection while it waits, and anything that fails from then on is an in-band ``error``."""
    admission = asyncio.ensure_future(admitting)
    await asyncio.wait({admission}, timeout=HOLD_GRACE_SECONDS)
    if admission.done():
        return await start(admission.result())
    held = _held_events(admission, start, error, ping_seconds)
    return StreamingResponse(held, media_type="text/event-stream", headers=SSE_HEADERS)


async def _held_events(
    admission: asyncio.Future[Admitted],
    start: Callable[[Admitted], Awaitable[StreamingResponse]],
    error: Callable[[int, str], bytes],
    ping_seconds: float,
) -> AsyncIterator[bytes]:
    opening: asyncio.Future[StreamingResponse] | None = None
    try:
        async for ping in _pings_until(admission, ping_seconds):
            yield ping
        opening = asyncio.ensure_future(start(admission.result()))
        async for ping in _pings_until(opening, ping_seconds):
            yield ping
        response = opening.result()
    except DomainError as exc:
        yield error(status_for(exc), exc.message)
        return
    finally:
        for pending in (admission, opening):
            if pending is not None and not pending.done():
                pending.cancel()  # the client went away while it waited
    try:
        async for chunk in response.body_iterator:
            yield chunk.encode() if isinstance(chunk, str) else bytes(chunk)
    finally:
        if response.background is not None:
            await response.background()


async def _pings_until(future: asyncio.Future[Any], ping_seconds: float) -> AsyncIterator[bytes]:
    while not future.done():
        await asyncio.wait({future}, timeout=ping_seconds)
        if not future.done():
            yield PING


@dataclass(eq=False)
class _StreamProxy(Generic[Item]):
    stream_format: StreamFormat[Item]
    first: Item
    deltas: AsyncIterator[Item]
    observation: RequestObservation
    ping_seconds: float
    _queue: asyncio.Queue[object] = field(default_factory=lambda: asyncio.Queue(maxsize=1), init=False)
    _reader: asyncio.Task[None] | None = field(default=None, init=False)

    async def events(self) -> AsyncIterator[bytes]:
        outcome = "client_disconnected"  # what a cancellation at any await below means
        try:
            yield self.stream_format.event(self.first)
            if self.stream_format.is_last(self.first):
                outcome = "200"
                if end := self.stream_format.end():
                    yield end
                return
            self._reader = asyncio.create_task(self._read())
            while True:
                try:
                    # Fast path without a timer when the reader is ahead (wait_for costs a task per call).
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(self._queue.get(), self.ping_seconds)
                    except TimeoutError:
                        yield PING
                        continue
                if item is _END:
                    outcome = "200"
                    if end := self.stream_format.end():
                        yield end
                    return
                if isinstance(item, DomainError):
                    status = status_for(item)
                    outcome = str(status)
                    yield self.stream_format.error(status, item.message)
                    return
                yield self.stream_format.event(item)  # type: ignore[arg-type]  # the queue holds items, _END or errors
        finally:
            self.close_now()
            self.observation.finish(outcome)

    async def _read(self) -> None:
        """Owns the upstream iterator: forwards deltas, then the end marker or the error, and always closes it."""
        try:
            async for delta in self.deltas:
                await self._queue.put(delta)
            await self._queue.put(_END)
        except DomainError as exc:
            await self._queue.put(exc)
        except Exception:
            logger.exception("streaming from the model server failed")
            await self._queue.put(UpstreamError("The stream from the model server failed unexpectedly.", 500))
        finally:
            await _close(self.deltas)

    def close_now(self) -> None:
        """Synchronous on purpose: it runs in ``finally`` blocks of a cancelled task, where awaiting is unreliable.
        Cancelling the reader makes it close the upstream iterator in its own task."""
        if self._reader is None:
            self._reader = asyncio.create_task(_close(self.deltas))  # never started: close the upstream anyway
        else:
            self._reader.cancel()

    async def close(self) -> None:
        if self._reader is None:
            await _close(self.deltas)
        self.observation.finish("client_disconnected")  # no-op when the body iterator already finished


async def _close(deltas: AsyncIterator[object]) -> None:
    aclose = getattr(deltas, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
