"""A small read-through cache for the request path (endpoints, API keys, tenants' limits): entries live ``ttl``
seconds, ``invalidate`` drops them at once (a change feed), concurrent misses for one key share a single lookup, and
an entry that has just expired is refreshed in the background rather than making a request wait on the database.

A failed lookup is never cached. When it fails because the database is unreachable (anything but a domain error),
the last answer stands, so a database outage does not turn away callers the gateway already knows; a domain error
(say, a deleted endpoint or tenant) drops the entry at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from model_engine_server.domain.exceptions import DomainError

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 100_000  # many distinct keys (e.g. guessed API keys): start over rather than grow without bound
STALE_FACTOR = 2  # an expired entry younger than this many TTLs is served while it is refreshed; older ones are not


@dataclass(eq=False)
class TtlCache(Generic[K, V]):
    lookup: Callable[[K], Awaitable[V]]
    ttl: float
    clock: Callable[[], float] = time.monotonic
    stale_factor: float = STALE_FACTOR
    max_entries: int = MAX_ENTRIES
    _entries: dict[K, tuple[float, V]] = field(default_factory=dict, init=False)
    _pending: dict[K, asyncio.Future[V]] = field(default_factory=dict, init=False)
    # Bumped by every invalidation: a lookup that started before it must not store its (maybe stale) answer.
    _generation: int = field(default=0, init=False)

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            age = self.clock() - entry[0]
            if age < self.ttl:
                return entry[1]
            if age < self.stale_factor * self.ttl:
                # Served once more while one background lookup refreshes it: the request that arrives at expiry
                # does not wait on the database (on a busy gateway, a p99 spike every ``ttl`` per key). An
                # invalidated entry is gone, so this never serves what the change feed has revoked.
                self._lookup_once(key)
                return entry[1]
        try:
            return await self.refresh(key)
        except DomainError:
            raise
        except Exception:
            if entry is None or self._entries.get(key) is not entry:  # unknown, or invalidated meanwhile
                raise
            return entry[1]

    async def refresh(self, key: K) -> V:
        """Ask now (joining a lookup already under way); the answer replaces the entry."""
        return await asyncio.shield(self._lookup_once(key))

    def _lookup_once(self, key: K) -> asyncio.Future[V]:
        """The lookup of ``key`` under way, or a new one."""
        pending = self._pending.get(key)
        if pending is None or pending.done():  # a finished lookup (its clean-up not yet run) is not shared later
            pending = asyncio.ensure_future(self._load(key))
            self._pending[key] = pending
            pending.add_done_callback(lambda done: self._forget(key, done))
        return pending

    async def _load(self, key: K) -> V:
        generation = self._generation
        try:
            value = await self.lookup(key)
        except DomainError:
            if generation == self._generation:
                self._entries.pop(key, None)  # gone for good (say, a deleted tenant): no stale answer stands for it
            raise
        if generation == self._generation:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (self.clock(), value)
        return value

    def _forget(self, key: K, done: asyncio.Future[V]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved: an error reaches the waiters, not the event loop's log

    def invalidate(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)
        self._pending.pop(key, None)  # waiters keep their future; the next request looks up afresh

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._pending.clear()
