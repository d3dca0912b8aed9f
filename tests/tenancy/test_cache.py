"""The request path's cache: a request arriving just after expiry gets the last answer at once while one lookup
refreshes it; an invalidated (revoked) entry is never served again; an entry long expired is looked up afresh."""

from __future__ import annotations

import asyncio

from model_engine_server.tenancy.cache import TtlCache


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
    await asyncio.sleep(0)  # a turn of the event loop: the background lookup starts
    assert registry.lookups == 2  # one, shared
    registry.release.set()
    await asyncio.sleep(0)  # and stores its answer
    await asyncio.sleep(0)
    assert await cache.get("k") == "k@2" and registry.lookups == 2

    registry.version = 3
    cache.invalidate("k")  # the change feed: the next request waits for the registry's answer
    assert await cache.get("k") == "k@3" and registry.lookups == 3

    registry.version = 4
    now[0] += 61  # older than two TTLs: not served, even once
    assert await cache.get("k") == "k@4" and registry.lookups == 4
