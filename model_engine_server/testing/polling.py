"""Waiting for a condition with a deadline: the only way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

Description = str | Callable[[], str]


def _fail(what: Description, timeout: float, last: Any) -> AssertionError:
    described = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout}s waiting for {described} (last value: {last!r})")


def _accepted(value: Any) -> bool:
    return bool(value)


def eventually(
    probe: Callable[[], T],
    accept: Callable[[T], bool] = _accepted,
    *,
    timeout: float = 10.0,
    what: Description = "the condition",
    interval: float = 0.02,
) -> T:
    """Call ``probe`` until ``accept`` holds for its value (by default: the value is truthy) and return that value.

    Fails with ``AssertionError`` naming ``what`` (a string, or a function for a message built at the deadline) and
    the last value once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise _fail(what, timeout, value)
        time.sleep(interval)


async def eventually_async(
    probe: Callable[[], Awaitable[T] | T],
    accept: Callable[[T], bool] = _accepted,
    *,
    timeout: float = 10.0,
    what: Description = "the condition",
    interval: float = 0.02,
) -> T:
    """``eventually`` inside an event loop: ``probe`` may be sync or async, and waiting never blocks the loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        value: T = await result if inspect.isawaitable(result) else result
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise _fail(what, timeout, value)
        await asyncio.sleep(interval)
