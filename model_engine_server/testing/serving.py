"""Servers a test runs in its own event loop, started for a block and stopped however it ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
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
