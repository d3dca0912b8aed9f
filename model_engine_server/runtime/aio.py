"""Small asyncio helpers: run long tasks together, stop them in order, and route SIGINT/SIGTERM to a callback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import Any


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(set(tasks))


async def until(condition: Callable[[], bool], poll: float = 0.05) -> None:
    while not condition():
        await asyncio.sleep(poll)


async def run_until(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends or ``stop`` is set; whether ``work`` ended by itself."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
        if finished:
            task.result()  # an error in the work surfaces here
        return finished
    finally:
        await cancel(task, stopper)


async def first_of(*works: Awaitable[None]) -> None:
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel(*tasks)


@contextlib.contextmanager
def stop_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``on_signal`` (each time) instead of raising KeyboardInterrupt mid-cleanup."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
