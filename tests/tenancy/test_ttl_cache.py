"""The tenancy caches (keys, tenant limits) keep serving what they know while the database is unreachable."""

from __future__ import annotations

import pytest

from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.tenancy.cache import TtlCache


class Registry:
    def __init__(self) -> None:
        self.answer: str | Exception = "limits v1"
        self.lookups = 0

    async def lookup(self, _key: str) -> str:
        self.lookups += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_an_expired_entry_stands_while_the_database_is_unreachable_and_refreshes_after() -> None:
    registry, clock = Registry(), Clock()
    cache: TtlCache[str, str] = TtlCache(registry.lookup, ttl=30, clock=clock)
    assert await cache.get("tenant") == "limits v1"
    clock.now = 31
    registry.answer = ConnectionRefusedError(111, "Connect call failed")
    assert await cache.get("tenant") == "limits v1"  # the outage: the last answer stands
    assert registry.lookups == 2  # ... and every request still asks, so recovery is seen at once
    with pytest.raises(ConnectionRefusedError):
        await cache.get("someone-never-seen")  # nothing to fall back on
    registry.answer = "limits v2"
    assert await cache.get("tenant") == "limits v2"


async def test_a_domain_error_or_an_invalidation_is_never_papered_over() -> None:
    registry, clock = Registry(), Clock()
    cache: TtlCache[str, str] = TtlCache(registry.lookup, ttl=30, clock=clock)
    await cache.get("tenant")
    clock.now = 31
    registry.answer = NotFoundError("gone")
    with pytest.raises(NotFoundError):
        await cache.get("tenant")
    registry.answer = "limits v1"
    await cache.get("tenant")
    cache.invalidate("tenant")  # the change feed says it changed: the old answer is no longer good
    registry.answer = ConnectionRefusedError(111, "Connect call failed")
    with pytest.raises(ConnectionRefusedError):
        await cache.get("tenant")
