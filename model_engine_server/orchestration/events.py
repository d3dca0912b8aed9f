"""Waiting for an ``asyncio.Event`` with a deadline, the way every orchestrator's ``wait_for_change`` and the local
supervisor need it."""

from __future__ import annotations

import asyncio
import contextlib


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; whether it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that races with the event, which would
    leave a cancelled waiter (a supervisor, a reconciler) running forever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def wait_for_change(changed: asyncio.Event, timeout: float) -> None:
    """``Orchestrator.wait_for_change``: return when ``changed`` is set (and clear it for the next wait), or after
    ``timeout`` seconds."""
    await wait_event(changed, timeout)
    changed.clear()
