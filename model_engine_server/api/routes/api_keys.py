"""``/v1/api-keys``: create, list and revoke API keys. A tenant manages its own keys; an admin key any tenant's."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Path, Query

from model_engine_server.api.deps import PrincipalDep, ServicesDep, TenancyDep
from model_engine_server.api.tenancy_schemas import (
    ApiKeyResponse,
    CreateApiKeyRequest,
    CreatedApiKeyResponse,
    ListApiKeysResponse,
)
from model_engine_server.domain.exceptions import InvalidRequestError

router = APIRouter(prefix="/v1/api-keys", tags=["api keys"])


@router.post("", response_model=CreatedApiKeyResponse)
async def create_api_key(
    body: CreateApiKeyRequest, principal: PrincipalDep, services: ServicesDep
) -> CreatedApiKeyResponse:
    """Create a key; the response is the only time the key itself is shown (it is stored hashed)."""
    owner = body.owner or principal.tenant
    principal.require_self_or_admin(owner, "create keys")
    if body.admin:
        principal.require_admin("create admin keys")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise InvalidRequestError("expires_at must be in the future.")
    key, record = await services.keys.create(owner, body.label, admin=body.admin, expires_at=body.expires_at)
    return CreatedApiKeyResponse(key=key, **ApiKeyResponse.of(record).model_dump())


@router.get("", response_model=ListApiKeysResponse)
async def list_api_keys(
    principal: PrincipalDep,
    services: ServicesDep,
    owner: str | None = Query(None, description="Only this tenant's keys (admin keys may name any tenant)."),
) -> ListApiKeysResponse:
    """The caller's keys (an admin: every tenant's, or ``owner``'s). Never the keys themselves."""
    if owner is not None:
        principal.require_self_or_admin(owner, "list the keys")
    elif not principal.admin:
        owner = principal.tenant
    return ListApiKeysResponse(api_keys=[ApiKeyResponse.of(k) for k in await services.keys.list(owner)])


@router.delete("/{key_id}", response_model=ApiKeyResponse)
async def revoke_api_key(
    principal: PrincipalDep,
    services: ServicesDep,
    tenancy: TenancyDep,
    key_id: str = Path(min_length=1, max_length=40),
) -> ApiKeyResponse:
    """Revoke a key: every gateway refuses it within a second. Other tenants' keys are 404 to a non-admin."""
    record = await services.keys.revoke(key_id, owner=None if principal.admin else principal.tenant)
    tenancy.keys.forget_all()  # this process at once; the others through the change feed
    return ApiKeyResponse.of(record)
