"""A short-lived cache of endpoint lookups: every way a completion comes in reads the registry through it.

Entries live for a second: the hot path then touches no database, and a status change or a delete is still seen
within about that second (the replica list, consulted on every request, is always current). An expired entry is
refreshed by one shared lookup, so a burst of requests never queues on the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.domain.exceptions import DomainError

ENDPOINT_CACHE_SECONDS = 1.0
_STALE_FACTOR = 10  # an entry older than this many cache periods is not served, even once
_MAX_ENTRIES = 10_000  # many distinct callers: drop everything rather than grow without bound

K = TypeVar("K", bound=Hashable)


class EndpointCache(Generic[K]):
    """``lookup(key)`` answers the endpoint or raises (e.g. ``EndpointNotFoundError``); answers are cached by key.

    A failed lookup is never cached: the next request asks again. When the lookup fails because the registry is
    unreachable (anything but a domain error), a known endpoint keeps its last record.
    """

    def __init__(
        self,
        lookup: Callable[[K], Awaitable[ModelEndpoint]],
        *,
        cache_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[K, tuple[float, ModelEndpoint]] = {}
        self._pending: dict[K, asyncio.Task[ModelEndpoint]] = {}

    async def get(self, key: K) -> ModelEndpoint:
        cached = self._cache.get(key)
        if cached is not None:
            age = self._clock() - cached[0]
            if age < self._cache_seconds:
                return cached[1]
            if age < self._cache_seconds * _STALE_FACTOR:
                # Serve the entry one more time while a single background lookup refreshes it: requests arriving
                # together at expiry would otherwise all queue on the database at once.
                self._refresh(key)
                return cached[1]
        try:
            return await self.refresh(key)
        except DomainError:
            raise
        except Exception:
            if cached is None:
                raise
            # The registry is unreachable (not: the endpoint is gone). Endpoints already known keep serving from
            # the last record read, so a database outage does not stop completions.
            return cached[1]

    async def refresh(self, key: K) -> ModelEndpoint:
        """Ask the registry now (joining a lookup already under way); the answer replaces the entry."""
        return await asyncio.shield(self._refresh(key))

    def _refresh(self, key: K) -> asyncio.Task[ModelEndpoint]:
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(key))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._store(key, done))
        return task

    def _store(self, key: K, done: asyncio.Task[ModelEndpoint]) -> None:
        del self._pending[key]
        if done.cancelled():
            return
        error = done.exception()  # also marks the exception retrieved when nobody awaited it
        if isinstance(error, DomainError):
            self._cache.pop(key, None)  # e.g. deleted, or no longer visible: the next request asks again
        if error is not None:
            return  # an unreachable registry keeps the last record (see get)
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (self._clock(), done.result())
