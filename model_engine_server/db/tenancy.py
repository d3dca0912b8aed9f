"""Tenants in the registry: their own limits, how many endpoints they own, and their token usage."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.models import EndpointRow, TenantLimitRow, UsageRow, utcnow
from model_engine_server.db.notifications import publish
from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.domain.tenancy import LIMIT_FIELDS, TenantLimitOverrides


def _overrides(row: TenantLimitRow) -> TenantLimitOverrides:
    return {name: value for name in LIMIT_FIELDS if (value := getattr(row, name)) is not None}


class TenantLimitStore:
    """Per-tenant overrides of the operator's default limits."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, tenant: str) -> TenantLimitOverrides | None:
        async with self._sessions() as session:
            row = await session.get(TenantLimitRow, tenant)
            return None if row is None else _overrides(row)

    async def list(self) -> dict[str, TenantLimitOverrides]:
        async with self._sessions() as session:
            rows = (await session.execute(select(TenantLimitRow).order_by(TenantLimitRow.tenant))).scalars()
            return {row.tenant: _overrides(row) for row in rows}

    async def set(self, tenant: str, overrides: TenantLimitOverrides) -> TenantLimitOverrides:
        """Replace the tenant's overrides (limits not given fall back to the defaults); every gateway is notified."""
        async with self._sessions.begin() as session:
            row = await session.get(TenantLimitRow, tenant, with_for_update=True)
            if row is None:
                row = TenantLimitRow(tenant=tenant)
                session.add(row)
            for name in LIMIT_FIELDS:
                setattr(row, name, overrides.get(name))
            row.updated_at = utcnow()
            await publish(session, f"tenant:{tenant}")
            return _overrides(row)

    async def count_endpoints(self, tenant: str) -> int:
        """Endpoints the tenant owns that are not on their way out (they count against ``max_endpoints``)."""
        query = select(func.count()).where(
            EndpointRow.owner == tenant, EndpointRow.status != EndpointStatus.DELETE_IN_PROGRESS.value
        )
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())


@dataclass(frozen=True)
class UsageRecord:
    tenant: str
    endpoint_name: str
    period_start: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class UsageSummary:
    endpoint_name: str
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(self, records: list[UsageRecord]) -> None:
        """One transaction for a whole batch (the recorder flushes periodically, off the request path)."""
        if not records:
            return
        async with self._sessions.begin() as session:
            session.add_all(UsageRow(**asdict(record)) for record in records)

    async def summary(self, tenant: str, start: datetime, end: datetime) -> list[UsageSummary]:
        """The tenant's usage in ``[start, end)``, per endpoint and UTC day."""
        hourly = (
            select(
                UsageRow.endpoint_name,
                UsageRow.period_start,
                func.sum(UsageRow.requests),
                func.sum(UsageRow.prompt_tokens),
                func.sum(UsageRow.completion_tokens),
            )
            .where(UsageRow.tenant == tenant, UsageRow.period_start >= start, UsageRow.period_start < end)
            .group_by(UsageRow.endpoint_name, UsageRow.period_start)
        )
        totals: dict[tuple[date, str], list[int]] = {}
        async with self._sessions() as session:
            for name, period, requests, prompt, completion in (await session.execute(hourly)).all():
                day = _as_utc(period).date()
                entry = totals.setdefault((day, name), [0, 0, 0])
                entry[0] += int(requests)
                entry[1] += int(prompt)
                entry[2] += int(completion)
        return [UsageSummary(name, day, *counts) for (day, name), counts in sorted(totals.items())]


def _as_utc(value: datetime) -> datetime:
    # Aggregates bypass the column type, so SQLite hands back naive values (stored as UTC).
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
