"""``/v1/tenants/{tenant}/limits`` (read: the tenant or an admin; write: an admin) and ``/v1/usage``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Path, Query

from model_engine_server.api.deps import PrincipalDep, TenancyDep
from model_engine_server.api.tenancy_schemas import (
    TenantLimitsBody,
    TenantLimitsResponse,
    UsageEntry,
    UsageResponse,
    as_utc,
)
from model_engine_server.domain.exceptions import InvalidRequestError

router = APIRouter(tags=["tenants"])

TenantPath = Path(min_length=1, max_length=128, pattern=r"^[^\s]+$")
DEFAULT_USAGE_DAYS = 30


@router.get("/v1/tenants/{tenant}/limits", response_model=TenantLimitsResponse)
async def get_tenant_limits(
    principal: PrincipalDep, tenancy: TenancyDep, tenant: str = TenantPath
) -> TenantLimitsResponse:
    principal.require_self_or_admin(tenant, "read the limits")
    return await _limits_response(tenancy, tenant)


@router.put("/v1/tenants/{tenant}/limits", response_model=TenantLimitsResponse)
async def set_tenant_limits(
    body: TenantLimitsBody, principal: PrincipalDep, tenancy: TenancyDep, tenant: str = TenantPath
) -> TenantLimitsResponse:
    """Replace the tenant's overrides (absent fields: the defaults). Every gateway applies them within a second."""
    principal.require_admin("set limits")
    await tenancy.limits.set(tenant, body.to_domain())
    tenancy.limiter.on_change(f"tenant:{tenant}")  # this process at once; the others through the change feed
    return await _limits_response(tenancy, tenant)


async def _limits_response(tenancy: TenancyDep, tenant: str) -> TenantLimitsResponse:
    overrides = await tenancy.limits.get(tenant)
    effective = tenancy.limiter.defaults.with_overrides(overrides)
    return TenantLimitsResponse(tenant=tenant, overrides=TenantLimitsBody.of(overrides), effective=effective)


_MOMENT: dict[str, Any] = {"json_schema_extra": {"format": "date-time"}}  # a date alone (2026-11-01) is read too


def _moment(value: str | None, name: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise InvalidRequestError(f"{name} must be an ISO 8601 date or time, e.g. 2026-11-01, got {value!r}.") from None


@router.get("/v1/usage", response_model=UsageResponse)
async def get_usage(
    principal: PrincipalDep,
    tenancy: TenancyDep,
    start: str | None = Query(
        None, min_length=1, description=f"ISO date/time (UTC); default {DEFAULT_USAGE_DAYS} days ago.", **_MOMENT
    ),
    end: str | None = Query(None, min_length=1, description="ISO date/time (UTC), exclusive; default now.", **_MOMENT),
    tenant: str | None = Query(None, description="Another tenant's usage (admin keys only)."),
) -> UsageResponse:
    """Requests and tokens per endpoint and UTC day. Recent usage appears after the next flush (a few seconds)."""
    who = tenant or principal.tenant
    principal.require_self_or_admin(who, "read the usage")
    until = _moment(end, "end", datetime.now(UTC))
    since = _moment(start, "start", until - timedelta(days=DEFAULT_USAGE_DAYS))
    # A window that ends before it starts holds no usage: an empty answer, as for any quiet window.
    summary = await tenancy.usage.summary(who, since, until) if since < until else []
    return UsageResponse(tenant=who, start=since, end=until, usage=[UsageEntry.of(s) for s in summary])
