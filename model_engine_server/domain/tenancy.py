"""Tenants' limits and the token-bucket arithmetic every limiter shares (no I/O: the clock is an argument).

A tenant is the owner an API key acts as. Each limit is a non-negative integer where 0 means unlimited; a tenant's
own override (when set) replaces the operator's default for that one limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import TypeAlias


class Limit(StrEnum):
    """The limits a tenant can hit; the value names the limit in a 429's ``detail`` and in the API."""

    REQUESTS_PER_MINUTE = "requests_per_minute"
    TOKENS_PER_MINUTE = "tokens_per_minute"
    MAX_CONCURRENT_REQUESTS = "max_concurrent_requests"
    MAX_ENDPOINTS = "max_endpoints"
    MAX_JOBS = "max_jobs"


@dataclass(frozen=True)
class TenantLimits:
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    max_concurrent_requests: int = 0
    max_endpoints: int = 0
    max_jobs: int = 0
    priority: int = 1  # fair-queueing weight: a tenant with priority 2 is served twice as often when both wait

    def of(self, limit: Limit) -> int:
        value: int = getattr(self, limit.value)
        return value

    def with_overrides(self, overrides: TenantLimitOverrides | None) -> TenantLimits:
        return replace(self, **overrides) if overrides else self


# One tenant's own limits: some of ``TenantLimits``' fields, by name; a limit not given keeps the operator's default.
TenantLimitOverrides: TypeAlias = Mapping[str, int]
LIMIT_FIELDS = tuple(f.name for f in fields(TenantLimits))  # what a tenant's overrides may name


@dataclass(frozen=True)
class Bucket:
    """A token bucket's state: ``level`` tokens at time ``at`` (seconds). ``level`` may be negative (a debt)."""

    level: float
    at: float


def refill(bucket: Bucket | None, capacity: float, per_second: float, now: float) -> Bucket:
    """The bucket at ``now``: full when new, otherwise refilled at ``per_second`` up to ``capacity``."""
    if bucket is None:
        return Bucket(capacity, now)
    elapsed = max(0.0, now - bucket.at)
    return Bucket(min(capacity, bucket.level + elapsed * per_second), max(now, bucket.at))


def seconds_until(bucket: Bucket, needed: float, per_second: float) -> float:
    """How long until the bucket holds ``needed`` tokens (0 when it already does)."""
    missing = needed - bucket.level
    return 0.0 if missing <= 0 else missing / per_second


def limit_detail(limit: Limit, value: int, tenant: str) -> str:
    units = {
        Limit.REQUESTS_PER_MINUTE: f"{value} requests per minute",
        Limit.TOKENS_PER_MINUTE: f"{value} generated tokens per minute",
        Limit.MAX_CONCURRENT_REQUESTS: f"{value} concurrent requests",
        Limit.MAX_ENDPOINTS: f"{value} model endpoints and fine-tunes",
        Limit.MAX_JOBS: f"{value} running jobs",
    }[limit]
    return f"Rate limit exceeded: {limit.value} ({units}) for tenant {tenant!r}."
