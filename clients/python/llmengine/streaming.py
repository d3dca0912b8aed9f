"""Streams of server-sent events as typed items, which always release their connection.

A stream opens its connection on first iteration and closes it when the events run out, when iteration raises,
when ``close()``/``aclose()`` is called, or when a ``with``/``async with`` block around it ends — so breaking out
of a loop early cannot leak a connection (and tells the gateway to stop generating). ``EventStream`` and
``AsyncEventStream`` do this for any item type; each resource names its stream and how one event is read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from types import TracebackType
from typing import Generic, Self, TypeVar

from llmengine._core.responses import parse_stream_event
from llmengine.data_types import CompletionStreamV1Response

T = TypeVar("T")


def _parsed(events: Generator[str, None, None], parse: Callable[[str], T | None]) -> Generator[T, None, None]:
    try:
        for data in events:
            item = parse(data)
            if item is None:
                return
            yield item
    finally:
        events.close()


async def _aparsed(events: AsyncGenerator[str, None], parse: Callable[[str], T | None]) -> AsyncGenerator[T, None]:
    try:
        async for data in events:
            item = parse(data)
            if item is None:
                return
            yield item
    finally:
        await events.aclose()


class EventStream(Iterator[T], Generic[T]):
    """Items read from each event's data by ``parse``, which returns None for an end marker (OpenAI's ``[DONE]``)."""

    def __init__(self, events: Generator[str, None, None], parse: Callable[[str], T | None]) -> None:
        self._items = _parsed(events, parse)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        self._items.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncEventStream(AsyncIterator[T], Generic[T]):
    """The async twin of ``EventStream``."""

    def __init__(self, events: AsyncGenerator[str, None], parse: Callable[[str], T | None]) -> None:
        self._items = _aparsed(events, parse)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class CompletionStream(EventStream[CompletionStreamV1Response]):
    """What ``Completion.create(..., stream=True)`` returns."""

    def __init__(self, events: Generator[str, None, None]) -> None:
        super().__init__(events, parse_stream_event)


class AsyncCompletionStream(AsyncEventStream[CompletionStreamV1Response]):
    """What ``await Completion.acreate(..., stream=True)`` returns."""

    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(events, parse_stream_event)
