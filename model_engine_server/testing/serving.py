"""Servers and processes a test starts for a block, stopped however the block ends: ``serving`` for those with
async ``start``/``stop`` (run in the test's event loop), ``running`` for those with plain ones."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Protocol, TypeVar


class Startable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


@contextlib.asynccontextmanager
async def serving(server: S) -> AsyncIterator[S]:
    """``async with serving(SomeServer(...)) as server:`` — ``start`` now, ``stop`` when the block ends."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class StartableProcess(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


P = TypeVar("P", bound=StartableProcess)


@contextlib.contextmanager
def running(process: P) -> Iterator[P]:
    """``with running(SomeProcess(...)) as process:`` — ``start`` now, ``stop`` when the block ends."""
    process.start()
    try:
        yield process
    finally:
        process.stop()
