"""The request path's cache: a request arriving just after expiry gets the last answer at once while one lookup
refreshes it; an invalidated (revoked) entry is never served again; an entry long expired is looked up afresh; and
while the database is unreachable the last answer stands, so known callers keep being served."""

from __future__ import annotations

import asyncio

import pytest

from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.domain.ttl_cache import STALE_FACTOR, TtlCache
from model_engine_server.testing import eventually_async


class Registry:
    """Answers ``key@version``; ``release`` lets a pending lookup finish."""

    def __init__(self) -> None:
        self.version = 1
        self.lookups = 0
        self.release = asyncio.Event()
        self.release.set()

    async def lookup(self, key: str) -> str:
        self.lookups += 1
        await self.release.wait()
        return f"{key}@{self.version}"


async def test_expired_entries_are_refreshed_in_the_background_and_invalidated_ones_never_served() -> None:
    now = [0.0]
    registry = Registry()
    cache: TtlCache[str, str] = TtlCache(registry.lookup, ttl=30, clock=lambda: now[0])
    assert await cache.get("k") == "k@1" and registry.lookups == 1
    now[0] = 29
    assert await cache.get("k") == "k@1" and registry.lookups == 1  # fresh: no lookup

    registry.version, registry.release = 2, asyncio.Event()
    now[0] = 31  # expired: the last answer at once, one lookup under way for every request meanwhile
    assert [await cache.get("k") for _ in range(3)] == ["k@1"] * 3
    await eventually_async(lambda: registry.lookups == 2, what="the background lookup")  # one, shared
    registry.release.set()
    # Until the lookup stores its answer, a request gets the last one and joins the lookup under way.
    await eventually_async(lambda: cache.get("k"), lambda answer: answer == "k@2", what="the refreshed answer")
    assert registry.lookups == 2

    registry.version = 3
    cache.invalidate("k")  # the change feed: the next request waits for the registry's answer
    assert await cache.get("k") == "k@3" and registry.lookups == 3

    registry.version = 4
    now[0] += 61  # older than two TTLs: not served, even once
    assert await cache.get("k") == "k@4" and registry.lookups == 4


class Outage:
    """Answers ``answer``, or raises it when it is an exception (the database down, or a domain error)."""

    def __init__(self) -> None:
        self.answer: str | Exception = "limits v1"
        self.lookups = 0

    async def lookup(self, _key: str) -> str:
        self.lookups += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


LONG_EXPIRED = STALE_FACTOR * 30 + 1  # past the window in which an expired entry is served while it refreshes


async def test_an_expired_entry_stands_while_the_database_is_unreachable_and_refreshes_after() -> None:
    now = [0.0]
    registry = Outage()
    cache: TtlCache[str, str] = TtlCache(registry.lookup, ttl=30, clock=lambda: now[0])
    assert await cache.get("tenant") == "limits v1"
    now[0] = LONG_EXPIRED
    registry.answer = ConnectionRefusedError(111, "Connect call failed")
    assert await cache.get("tenant") == "limits v1"  # the outage: the last answer stands
    assert registry.lookups == 2  # ... and every request still asks, so recovery is seen at once
    with pytest.raises(ConnectionRefusedError):
        await cache.get("someone-never-seen")  # nothing to fall back on
    registry.answer = "limits v2"
    assert await cache.get("tenant") == "limits v2"


async def test_a_domain_error_or_an_invalidation_is_never_papered_over() -> None:
    now = [0.0]
    registry = Outage()
    cache: TtlCache[str, str] = TtlCache(registry.lookup, ttl=30, clock=lambda: now[0])
    await cache.get("tenant")
    now[0] = LONG_EXPIRED
    registry.answer = NotFoundError("gone")
    with pytest.raises(NotFoundError):
        await cache.get("tenant")

    registry.answer = "limits v1"
    await cache.get("tenant")
    now[0] += 31  # just expired: this request gets the last answer while the refresh finds the tenant gone
    registry.answer = NotFoundError("gone")
    assert await cache.get("tenant") == "limits v1"
    await eventually_async(lambda: registry.lookups == 4, what="the background lookup")  # it fails as it runs
    with pytest.raises(NotFoundError):
        await cache.get("tenant")  # the entry went with it: the next request sees the error

    registry.answer = "limits v1"
    await cache.get("tenant")
    cache.invalidate("tenant")  # the change feed says it changed: the old answer is no longer good
    registry.answer = ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(ConnectionRefusedError):
        await cache.get("tenant")
