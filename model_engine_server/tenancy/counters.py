"""Where limit counters live: process memory on one machine, Redis when gateway replicas share them.

Two primitives cover every limit:
- ``take``: a token bucket (capacity, refill per second). It succeeds when the bucket holds ``need`` and then
  removes ``cost`` (``cost`` may exceed the level: generated tokens are charged after the fact, leaving a debt);
  otherwise it answers how many seconds until it would succeed.
- ``acquire``/``release``: a counted slot (concurrent requests). In Redis a slot is a lease that expires, so a
  gateway that dies holding slots does not hold them forever.

The clock is the caller's (``time.time`` in production, a fake in tests): Redis only stores and compares numbers.
If Redis cannot be reached the counters fail open — every request is let through —,
``llm_engine_rate_limiter_fail_open_total`` counts the checks let through and ``llm_engine_rate_limiter_failing_open``
is 1 until Redis answers again (0 otherwise, and always 0 with counters in memory).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from redis.exceptions import RedisError

from model_engine_server.config import Settings
from model_engine_server.domain.tenancy import Bucket, refill, seconds_until

log = logging.getLogger(__name__)

FAIL_OPEN = Counter(
    "llm_engine_rate_limiter_fail_open",
    "Limit checks let through without checking because the counter store (Redis) could not be reached.",
)
FAILING_OPEN = Gauge(
    "llm_engine_rate_limiter_failing_open",
    "1 while the rate limiter's Redis cannot be reached and limits are not enforced; 0 otherwise.",
)

_RETRY_SECONDS = 1.0  # after a Redis failure, fail open at once for this long instead of waiting on every request


def limit_key_prefix(settings: Settings) -> str:
    """Limit counters live next to the broker's keys, under the same install prefix (several installs, one Redis)."""
    return f"{settings.broker_key_prefix}llm-engine:limits:"


class LimitCounters(Protocol):
    async def take(self, key: str, capacity: float, per_second: float, cost: float, need: float, now: float) -> float:
        """0 when taken; otherwise the seconds until ``need`` tokens will be there (nothing taken)."""

    async def acquire(self, key: str, limit: int, lease: str, expires: float, now: float) -> bool:
        """Hold one of ``limit`` slots under the id ``lease`` until ``release`` (or ``expires``)."""

    async def release(self, key: str, lease: str) -> None: ...


class MemoryCounters:
    """One process's counters (the one-machine default)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}
        self._slots: dict[str, set[str]] = {}

    async def take(self, key: str, capacity: float, per_second: float, cost: float, need: float, now: float) -> float:
        bucket = refill(self._buckets.get(key), capacity, per_second, now)
        wait = seconds_until(bucket, need, per_second)
        self._buckets[key] = bucket if wait > 0 else Bucket(bucket.level - cost, bucket.at)
        return wait

    async def acquire(self, key: str, limit: int, lease: str, expires: float, now: float) -> bool:  # noqa: ARG002 (leases cannot outlive this process)
        held = self._slots.setdefault(key, set())
        if len(held) >= limit:
            return False
        held.add(lease)
        return True

    async def release(self, key: str, lease: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.discard(lease)
            if not held:
                del self._slots[key]


# KEYS[1] bucket; ARGV capacity, per_second, cost, need, now. Floats travel as strings (Lua numbers would be
# truncated to integers on the way back).
_TAKE = """
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local cost, need, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local level, at = capacity, now
if state[1] then
  level, at = tonumber(state[1]), tonumber(state[2])
  level = math.min(capacity, level + math.max(0, now - at) * rate)
  at = math.max(now, at)
end
if level < need then
  return tostring((need - level) / rate)
end
redis.call('HSET', KEYS[1], 'level', tostring(level - cost), 'at', tostring(at))
redis.call('EXPIRE', KEYS[1], math.ceil((capacity + cost) / rate) + 60)
return '0'
"""

# KEYS[1] lease set; ARGV limit, lease, expires, now.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) - tonumber(ARGV[4])) + 60)
return 1
"""


class RedisCounters:
    """Counters shared by every gateway replica; each check is one atomic Lua script."""

    def __init__(
        self, url: str, *, prefix: str = "llm-engine:limits:", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._redis = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix
        self._take = self._redis.register_script(_TAKE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._clock = clock  # only for the fail-open back-off
        self._down_until = 0.0

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def take(self, key: str, capacity: float, per_second: float, cost: float, need: float, now: float) -> float:
        answer = await self._call(self._take, key, [capacity, per_second, cost, need, now])
        return 0.0 if answer is None else float(answer)

    async def acquire(self, key: str, limit: int, lease: str, expires: float, now: float) -> bool:
        answer = await self._call(self._acquire, key, [limit, lease, expires, now])
        return answer is None or int(answer) == 1

    async def release(self, key: str, lease: str) -> None:
        if self._clock() >= self._down_until:
            try:
                await self._redis.zrem(self._prefix + key, lease)
            except RedisError:
                pass  # the lease expires on its own

    async def _call(self, script: object, key: str, args: list[object]) -> bytes | None:
        """The script's answer, or None (fail open) while Redis is unreachable."""
        if self._clock() < self._down_until:
            FAIL_OPEN.inc()
            return None
        try:
            answer: bytes = await script(keys=[self._prefix + key], args=args)  # type: ignore[operator]
        except (RedisError, OSError) as exc:
            log.warning("rate limiter: Redis unreachable (%s); letting requests through", type(exc).__name__)
            self._down_until = self._clock() + _RETRY_SECONDS
            FAILING_OPEN.set(1)
            FAIL_OPEN.inc()
            return None
        FAILING_OPEN.set(0)
        return answer
