"""Per-tenant limits: the operator's defaults (``LLM_ENGINE_TENANT_*``) with each tenant's overrides, checked
against the counters (memory or Redis). Every limit is 0 = unlimited; a tenant without limits costs one cache hit.

Past a limit a ``RateLimitExceededError`` names it and says when to retry (429 + ``Retry-After`` on the wire).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from model_engine_server.db.notifications import EVERYTHING
from model_engine_server.domain.exceptions import RateLimitExceededError
from model_engine_server.domain.tenancy import Limit, TenantLimitOverrides, TenantLimits, limit_detail
from model_engine_server.domain.ttl_cache import TtlCache
from model_engine_server.tenancy.counters import LimitCounters

OverridesLookup = Callable[[str], Awaitable[TenantLimitOverrides | None]]

_ALWAYS = -1e18  # "need" for charges made after the fact: they always go through, possibly into debt
_SLOT_RETRY_SECONDS = 1.0  # a concurrency slot frees when some request ends; 1 s is an honest guess


class TenantLimiter:
    def __init__(
        self,
        defaults: TenantLimits,
        overrides: OverridesLookup,
        counters: LimitCounters,
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = 30.0,
        lease_seconds: float = 3600.0,
    ) -> None:
        self.defaults = defaults
        self._overrides: TtlCache[str, TenantLimitOverrides | None] = TtlCache(overrides, cache_seconds)
        self._counters = counters
        self._clock = clock
        self._lease_seconds = lease_seconds  # a slot of a crashed gateway is free again after this (Redis)

    async def limits(self, tenant: str) -> TenantLimits:
        return self.defaults.with_overrides(await self._overrides.get(tenant))

    def on_change(self, payload: str) -> None:
        """Change feed: ``tenant:<name>`` got new limits, ``*`` anything may have changed."""
        if payload == EVERYTHING:
            self._overrides.clear()
        elif payload.startswith("tenant:"):
            self._overrides.invalidate(payload[7:])

    async def admit_request(self, tenant: str) -> None:
        """Count one authenticated request against ``requests_per_minute``."""
        limits = await self.limits(tenant)
        if limits.requests_per_minute:
            await self._take(tenant, Limit.REQUESTS_PER_MINUTE, limits.requests_per_minute, cost=1, need=1)

    async def check_tokens(self, tenant: str) -> None:
        """Refuse a completion while the tenant's generated-token budget is spent (charged by ``charge_tokens``)."""
        limits = await self.limits(tenant)
        if limits.tokens_per_minute:
            await self._take(tenant, Limit.TOKENS_PER_MINUTE, limits.tokens_per_minute, cost=0, need=1)

    async def charge_tokens(self, tenant: str, tokens: int) -> None:
        limits = await self.limits(tenant)
        if limits.tokens_per_minute and tokens > 0:
            await self._take(tenant, Limit.TOKENS_PER_MINUTE, limits.tokens_per_minute, cost=tokens, need=_ALWAYS)

    @asynccontextmanager
    async def concurrent_slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one of the tenant's ``max_concurrent_requests`` slots for the body of the ``with``."""
        limit = (await self.limits(tenant)).max_concurrent_requests
        if not limit:
            yield
            return
        key, lease, now = f"{Limit.MAX_CONCURRENT_REQUESTS.value}:{tenant}", uuid.uuid4().hex, self._clock()
        if not await self._counters.acquire(key, limit, lease, now + self._lease_seconds, now):
            raise self._exceeded(tenant, Limit.MAX_CONCURRENT_REQUESTS, limit, _SLOT_RETRY_SECONDS)
        try:
            yield
        finally:
            await self._counters.release(key, lease)

    async def check_quota(self, tenant: str, limit: Limit, current: int) -> None:
        """Refuse creating one more of something the tenant already has ``current`` of (endpoints, jobs)."""
        allowed = (await self.limits(tenant)).of(limit)
        if allowed and current >= allowed:
            raise self._exceeded(tenant, limit, allowed, retry_after=60.0)

    async def _take(self, tenant: str, limit: Limit, per_minute: int, *, cost: float, need: float) -> None:
        wait = await self._counters.take(
            f"{limit.value}:{tenant}", per_minute, per_minute / 60.0, cost, need, self._clock()
        )
        if wait > 0:
            raise self._exceeded(tenant, limit, per_minute, wait)

    @staticmethod
    def _exceeded(tenant: str, limit: Limit, value: int, retry_after: float) -> RateLimitExceededError:
        seconds = max(1, math.ceil(retry_after))
        return RateLimitExceededError(limit_detail(limit, value, tenant), limit=limit.value, retry_after=seconds)
