"""Completion streams: iterators of ``CompletionStreamV1Response`` that always release their connection.

A stream opens its connection on first iteration and closes it when the events run out, when iteration raises,
when ``close()``/``aclose()`` is called, or when a ``with``/``async with`` block around it ends — so breaking out
of a loop early cannot leak a connection (and tells the gateway to stop generating).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from types import TracebackType

from llmengine._core.responses import parse_stream_event
from llmengine.data_types import CompletionStreamV1Response


def _parsed(events: Generator[str, None, None]) -> Generator[CompletionStreamV1Response, None, None]:
    try:
        for data in events:
            yield parse_stream_event(data)
    finally:
        events.close()


async def _aparsed(events: AsyncGenerator[str, None]) -> AsyncGenerator[CompletionStreamV1Response, None]:
    try:
        async for data in events:
            yield parse_stream_event(data)
    finally:
        await events.aclose()


class CompletionStream(Iterator[CompletionStreamV1Response]):
    """What ``Completion.create(..., stream=True)`` returns."""

    def __init__(self, events: Generator[str, None, None]) -> None:
        self._responses = _parsed(events)

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> CompletionStreamV1Response:
        return next(self._responses)

    def close(self) -> None:
        self._responses.close()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncCompletionStream(AsyncIterator[CompletionStreamV1Response]):
    """What ``await Completion.acreate(..., stream=True)`` returns."""

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        self._responses = _aparsed(events)

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def __anext__(self) -> CompletionStreamV1Response:
        return await self._responses.__anext__()

    async def aclose(self) -> None:
        await self._responses.aclose()

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
