"""Everything tenancy needs in one gateway process, built from the settings and started by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from model_engine_server.config import Settings
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.notifications import ChangeFeed
from model_engine_server.db.registry import Registry
from model_engine_server.db.tenancy import TenantLimitStore, UsageStore
from model_engine_server.domain.jobs import JobKind
from model_engine_server.domain.tenancy import Limit
from model_engine_server.tenancy.counters import LimitCounters, MemoryCounters, RedisCounters, limit_key_prefix
from model_engine_server.tenancy.gate import CompletionGate
from model_engine_server.tenancy.key_cache import KeyCache
from model_engine_server.tenancy.limiter import TenantLimiter
from model_engine_server.tenancy.usage import UsageRecorder


@dataclass
class Tenancy:
    keys: KeyCache
    limits: TenantLimitStore
    limiter: TenantLimiter
    usage: UsageStore
    gate: CompletionGate
    recorder: UsageRecorder
    feed: ChangeFeed
    counters: LimitCounters
    jobs: JobRegistry

    @classmethod
    def build(cls, settings: Settings, registry: Registry) -> Tenancy:
        limits = registry.tenant_limits
        counters: LimitCounters = (
            RedisCounters(settings.rate_limit_redis_url, prefix=limit_key_prefix(settings))
            if settings.rate_limit_redis_url
            else MemoryCounters()
        )
        limiter = TenantLimiter(
            settings.tenant_limits(),
            limits.get,
            counters,
            cache_seconds=settings.api_key_cache_seconds,
            lease_seconds=settings.upstream_read_timeout_seconds + 60,
        )
        usage = registry.usage
        recorder = UsageRecorder(usage, settings.usage_flush_seconds)
        key_cache = KeyCache(registry.keys, settings.api_key_cache_seconds)

        def on_change(payload: str) -> None:
            key_cache.on_change(payload)
            limiter.on_change(payload)

        feed = registry.change_feed(on_change)
        gate = CompletionGate(limiter, recorder, fair=settings.fair_queueing, overcommit=settings.fair_queue_overcommit)
        return cls(key_cache, limits, limiter, usage, gate, recorder, feed, counters, registry.jobs)

    async def check_quota(self, owner: str, limit: Limit) -> None:
        """429 when ``owner`` already has its ``max_endpoints`` or ``max_jobs`` (checked before one more is recorded).

        As llm-engine counts them: endpoints (not being deleted) plus queued or running fine-tunes, which each end
        in a model to deploy, against ``max_endpoints``; queued or running batch and fine-tune jobs against
        ``max_jobs``. Nothing is counted for a tenant without the limit."""
        if not (await self.limiter.limits(owner)).of(limit):
            return
        if limit is Limit.MAX_ENDPOINTS:
            current = await self.limits.count_endpoints(owner) + await self.jobs.count_active(owner, JobKind.FINE_TUNE)
        elif limit is Limit.MAX_JOBS:
            current = await self.jobs.count_active(owner)
        else:
            raise ValueError(f"{limit.value} is a rate, not a quota")
        await self.limiter.check_quota(owner, limit, current)

    async def start(self) -> None:
        await self.feed.start()
        await self.recorder.start()

    async def close(self) -> None:
        await self.feed.close()
        await self.recorder.close()
        if isinstance(self.counters, RedisCounters):
            await self.counters.aclose()
