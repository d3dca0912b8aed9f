"""Tenants' limits hit and recover exactly at the configured rates (a controllable clock, no sleeps), with the
counters in memory and in a real Redis; if Redis goes down the limiter fails open and says so in its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import REGISTRY

from model_engine_server.domain.exceptions import RateLimitExceededError
from model_engine_server.domain.tenancy import Limit, TenantLimitOverrides, TenantLimits
from model_engine_server.tenancy.counters import LimitCounters, MemoryCounters, RedisCounters
from model_engine_server.tenancy.limiter import TenantLimiter
from tests.tenancy.processes import private_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with private_redis() as (url, _process):
        yield url


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[LimitCounters]:
    if request.param == "memory":
        yield MemoryCounters()
        return
    shared = RedisCounters(request.getfixturevalue("redis_url"), prefix=f"test:{id(request)}:")
    yield shared
    await shared.aclose()


def limiter_with(counters: LimitCounters, clock: Clock, **limits: int) -> TenantLimiter:
    overrides: dict[str, TenantLimitOverrides] = {"vip": {"requests_per_minute": 120}}

    async def lookup(tenant: str) -> TenantLimitOverrides | None:
        return overrides.get(tenant)

    return TenantLimiter(TenantLimits(**limits), lookup, counters, clock=clock)


async def admitted(limiter: TenantLimiter, tenant: str, attempts: int) -> int:
    count = 0
    for _ in range(attempts):
        try:
            await limiter.admit_request(tenant)
            count += 1
        except RateLimitExceededError:
            pass
    return count


async def test_requests_per_minute_hit_and_recovered_at_the_configured_rate(counters: LimitCounters) -> None:
    clock = Clock()
    limiter = limiter_with(counters, clock, requests_per_minute=60)
    assert await admitted(limiter, "team-a", 100) == 60  # a full bucket: one minute's worth at once
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.admit_request("team-a")
    assert refused.value.limit == "requests_per_minute" and refused.value.retry_after == 1
    assert "requests_per_minute (60 requests per minute)" in refused.value.message

    clock.now += 0.5
    assert await admitted(limiter, "team-a", 5) == 0  # half a request has refilled
    clock.now += 0.5
    assert await admitted(limiter, "team-a", 5) == 1  # one per second
    clock.now += 10
    assert await admitted(limiter, "team-a", 50) == 10
    clock.now += 3600
    assert await admitted(limiter, "team-a", 100) == 60  # never more than a minute's worth

    assert await admitted(limiter, "team-b", 100) == 60  # tenants do not share buckets
    assert await admitted(limiter, "vip", 200) == 120  # a tenant's override replaces the default


async def test_generated_tokens_per_minute_are_charged_after_the_fact(counters: LimitCounters) -> None:
    clock = Clock()
    limiter = limiter_with(counters, clock, tokens_per_minute=600)  # 10 tokens per second
    await limiter.check_tokens("team-a")
    await limiter.charge_tokens("team-a", 1000)  # a long completion: 400 tokens of debt
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.check_tokens("team-a")
    assert refused.value.limit == "tokens_per_minute"
    assert refused.value.retry_after == 41  # (400 + 1) / 10 per second, rounded up
    clock.now += 40
    with pytest.raises(RateLimitExceededError):
        await limiter.check_tokens("team-a")
    clock.now += 1  # Retry-After later: admitted
    await limiter.check_tokens("team-a")


async def test_concurrent_requests_are_capped_and_freed(counters: LimitCounters) -> None:
    limiter = limiter_with(counters, Clock(), max_concurrent_requests=2)
    async with limiter.concurrent_slot("team-a"), limiter.concurrent_slot("team-a"):
        with pytest.raises(RateLimitExceededError) as refused:
            async with limiter.concurrent_slot("team-a"):
                pass
        assert refused.value.limit == "max_concurrent_requests"
        async with limiter.concurrent_slot("team-b"):
            pass
    async with limiter.concurrent_slot("team-a"), limiter.concurrent_slot("team-a"):
        pass


async def test_job_quota_is_a_check_job_submission_calls() -> None:
    limiter = limiter_with(MemoryCounters(), Clock(), max_jobs=2)
    await limiter.check_quota("team-a", Limit.MAX_JOBS, current=1)
    with pytest.raises(RateLimitExceededError) as refused:
        await limiter.check_quota("team-a", Limit.MAX_JOBS, current=2)
    assert refused.value.limit == "max_jobs" and "2 running jobs" in refused.value.message
    unlimited = limiter_with(MemoryCounters(), Clock())
    await unlimited.check_quota("team-a", Limit.MAX_JOBS, current=10_000)


def _metric(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    return 0.0 if value is None else value


async def test_redis_down_fails_open_and_shows_in_metrics() -> None:
    clock = Clock()
    with private_redis() as (url, process):
        counters = RedisCounters(url, prefix="failopen:")
        limiter = limiter_with(counters, clock, requests_per_minute=1, max_concurrent_requests=1)
        await limiter.admit_request("team-a")
        with pytest.raises(RateLimitExceededError):
            await limiter.admit_request("team-a")
        assert _metric("llm_engine_rate_limiter_failing_open") == 0

        process.terminate()
        process.wait(timeout=10)
        before = _metric("llm_engine_rate_limiter_fail_open_total")
        assert await admitted(limiter, "team-a", 5) == 5  # never closed
        async with limiter.concurrent_slot("team-a"), limiter.concurrent_slot("team-a"):
            pass
        assert _metric("llm_engine_rate_limiter_fail_open_total") >= before + 7
        assert _metric("llm_engine_rate_limiter_failing_open") == 1
        await counters.aclose()


async def test_gateway_replicas_share_one_budget_in_redis(redis_url: str) -> None:
    """Two gateways' limiters (each its own connection, as two replicas have) draw on the same bucket."""
    clock = Clock()
    replicas = [RedisCounters(redis_url, prefix="shared-budget:") for _ in range(2)]
    first, second = (limiter_with(counters, clock, requests_per_minute=10) for counters in replicas)
    assert await admitted(first, "team-a", 6) == 6
    assert await admitted(second, "team-a", 6) == 4  # what the first replica left
    with pytest.raises(RateLimitExceededError):
        await first.admit_request("team-a")
    clock.now += 6  # one request refills every 6 s, for either replica
    assert await admitted(second, "team-a", 3) == 1
    for counters in replicas:
        await counters.aclose()
