"""Bodies of the tenancy API: ``/v1/api-keys``, ``/v1/tenants/{tenant}/limits`` and ``/v1/usage``."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_engine_server.db.tenancy import UsageSummary
from model_engine_server.domain.entities import ApiKey
from model_engine_server.domain.tenancy import TenantLimitOverrides, TenantLimits

MAX_LIMIT = 2**31 - 1
TenantName = Field(min_length=1, max_length=128, pattern=r"^[^\s]+$")


def as_utc(value: datetime) -> datetime:
    """Naive datetimes in requests are read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CreateApiKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^\s]+$")  # default: caller
    label: str = Field(default="", max_length=256)
    expires_at: datetime | None = None
    admin: bool = Field(default=False, strict=True)

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


class ApiKeyResponse(BaseModel):
    id: str
    owner: str
    prefix: str
    label: str
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyResponse:
        return cls(**asdict(key), label=key.description)  # the API calls the key's description its label


class CreatedApiKeyResponse(ApiKeyResponse):
    key: str  # shown once: only its hash is stored


class ListApiKeysResponse(BaseModel):
    api_keys: list[ApiKeyResponse]


class TenantLimitsBody(BaseModel):
    """A tenant's own limits; null (or absent) keeps the operator's default; 0 is unlimited."""

    model_config = ConfigDict(extra="forbid")

    # Strict: true/false are not counts. The upper bound is what the registry's integer columns hold.
    requests_per_minute: int | None = Field(default=None, ge=0, le=MAX_LIMIT, strict=True)
    tokens_per_minute: int | None = Field(default=None, ge=0, le=MAX_LIMIT, strict=True)
    max_concurrent_requests: int | None = Field(default=None, ge=0, le=MAX_LIMIT, strict=True)
    max_endpoints: int | None = Field(default=None, ge=0, le=MAX_LIMIT, strict=True)
    max_jobs: int | None = Field(default=None, ge=0, le=MAX_LIMIT, strict=True)
    priority: int | None = Field(default=None, ge=1, le=1000, strict=True)

    def to_domain(self) -> TenantLimitOverrides:
        return self.model_dump(exclude_none=True)

    @classmethod
    def of(cls, overrides: TenantLimitOverrides | None) -> TenantLimitsBody:
        return cls(**(overrides or {}))


class TenantLimitsResponse(BaseModel):
    tenant: str
    overrides: TenantLimitsBody  # what was set for this tenant
    effective: TenantLimits  # what applies: the overrides over the defaults


class UsageEntry(BaseModel):
    endpoint_name: str
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def of(cls, summary: UsageSummary) -> UsageEntry:
        return cls(**asdict(summary))


class UsageResponse(BaseModel):
    tenant: str
    start: datetime
    end: datetime
    usage: list[UsageEntry]
