"""Repositories: the registry's operations, each one transaction. They speak in domain entities, not rows."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.models import ApiKeyRow, AsyncTaskRow, EndpointRow, record_of, utcnow
from model_engine_server.db.notifications import publish
from model_engine_server.domain.entities import (
    ApiKey,
    AsyncTaskRecord,
    EndpointConfig,
    EndpointOrder,
    EndpointStatus,
    EndpointType,
    InferenceFramework,
    KeyIdentity,
    ModelEndpoint,
    ModelSource,
    ObservedState,
)
from model_engine_server.domain.exceptions import ConflictError, EndpointNotFoundError, NotFoundError

API_KEY_PREFIX = "llme_"


_CONFIG_FIELDS = tuple(EndpointConfig.__dataclass_fields__)


def _config_columns(config: EndpointConfig) -> dict[str, Any]:
    values = asdict(config)
    values["metadata_"] = values.pop("metadata")
    return values


def _to_entity(row: EndpointRow) -> ModelEndpoint:
    raw = {name: getattr(row, "metadata_" if name == "metadata" else name) for name in _CONFIG_FIELDS}
    raw["source"] = ModelSource(raw["source"])
    raw["inference_framework"] = InferenceFramework(raw["inference_framework"])
    raw["endpoint_type"] = EndpointType(raw["endpoint_type"])
    return record_of(ModelEndpoint, row, config=EndpointConfig(**raw), status=EndpointStatus(row.status))


class EndpointRegistry:
    """Model endpoints: what operators asked for and what the reconciler observed."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, *, owner: str, name: str, config: EndpointConfig) -> ModelEndpoint:
        now = utcnow()
        row = EndpointRow(
            id=f"end_{uuid.uuid4().hex}",
            name=name,
            owner=owner,
            created_by=owner,
            created_at=now,
            last_updated_at=now,
            status=EndpointStatus.UPDATE_PENDING.value,
            available_workers=0,
            unavailable_workers=0,
            revision=1,
            **_config_columns(config),
        )
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise ConflictError(f"A model endpoint named {name!r} already exists.") from exc
        return _to_entity(row)

    async def get_owned(self, name: str, owner: str) -> ModelEndpoint:
        """The endpoint if ``owner`` owns it; others' endpoints are indistinguishable from missing ones."""
        return await self._one(select(EndpointRow).where(EndpointRow.name == name, EndpointRow.owner == owner), name)

    async def get_for_inference(self, name: str, caller: str) -> ModelEndpoint:
        """The endpoint if ``caller`` may send it requests: its owner, or anyone when it is public."""
        query = select(EndpointRow).where(
            EndpointRow.name == name, or_(EndpointRow.owner == caller, EndpointRow.public_inference.is_(True))
        )
        return await self._one(query, name)

    async def list_for_inference(self, caller: str) -> list[ModelEndpoint]:
        """Every endpoint ``caller`` may send requests to (its own and the public ones), by name."""
        query = select(EndpointRow).where(or_(EndpointRow.owner == caller, EndpointRow.public_inference.is_(True)))
        return await self._all(query.order_by(EndpointRow.name))

    async def get_by_id(self, endpoint_id: str) -> ModelEndpoint | None:
        async with self._sessions() as session:
            row = await session.get(EndpointRow, endpoint_id)
            return _to_entity(row) if row is not None else None

    async def list_owned(
        self, owner: str, *, name: str | None = None, order_by: EndpointOrder = EndpointOrder.NEWEST
    ) -> list[ModelEndpoint]:
        query = select(EndpointRow).where(EndpointRow.owner == owner)
        if name is not None:
            query = query.where(EndpointRow.name == name)
        ordering = {
            EndpointOrder.NEWEST: (EndpointRow.created_at.desc(), EndpointRow.name),
            EndpointOrder.OLDEST: (EndpointRow.created_at.asc(), EndpointRow.name),
            EndpointOrder.ALPHABETICAL: (EndpointRow.name.asc(),),
        }[order_by]
        return await self._all(query.order_by(*ordering))

    async def list_all(self) -> list[ModelEndpoint]:
        return await self._all(select(EndpointRow).order_by(EndpointRow.created_at))

    async def update_config(self, name: str, owner: str, config: EndpointConfig) -> ModelEndpoint:
        """Store a new config as the next revision; the reconciler rolls the servers over to it."""
        async with self._sessions.begin() as session:
            row = await self._locked_owned(session, name, owner)
            if row.status == EndpointStatus.DELETE_IN_PROGRESS:
                raise ConflictError(f"Model endpoint {name!r} is being deleted.")
            for column, value in _config_columns(config).items():
                setattr(row, column, value)
            row.revision += 1
            row.status = EndpointStatus.UPDATE_PENDING.value
            row.status_reason = None
            row.last_updated_at = utcnow()
            return _to_entity(row)

    async def mark_deleting(self, name: str, owner: str) -> ModelEndpoint:
        async with self._sessions.begin() as session:
            row = await self._locked_owned(session, name, owner)
            row.status = EndpointStatus.DELETE_IN_PROGRESS.value
            row.status_reason = None
            row.last_updated_at = utcnow()
            return _to_entity(row)

    async def set_status(self, endpoint_id: str, revision: int, status: EndpointStatus, reason: str | None) -> bool:
        """Set the status of ``revision``; a newer revision or a pending delete wins (returns False)."""
        return await self._write_observation(endpoint_id, revision, status=status.value, status_reason=reason)

    async def record_observed(self, endpoint_id: str, revision: int, state: ObservedState) -> bool:
        """Write what the orchestrator saw for ``revision``; ignored once a newer revision or a delete exists."""
        return await self._write_observation(
            endpoint_id,
            revision,
            status=state.status.value,
            status_reason=state.reason,
            available_workers=state.available_workers,
            unavailable_workers=state.unavailable_workers,
        )

    async def record_demand(self, endpoint_id: str, at: datetime) -> None:
        """A gateway saw a request for the endpoint at ``at`` (only ever moves forward; several gateways write)."""
        statement = (
            update(EndpointRow)
            .where(
                EndpointRow.id == endpoint_id,
                or_(EndpointRow.last_request_at.is_(None), EndpointRow.last_request_at < at),
            )
            .values(last_request_at=at)
        )
        async with self._sessions.begin() as session:
            await session.execute(statement)

    async def remove(self, endpoint_id: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(EndpointRow).where(EndpointRow.id == endpoint_id))

    async def _write_observation(self, endpoint_id: str, revision: int, **values: Any) -> bool:
        statement = (
            update(EndpointRow)
            .where(
                EndpointRow.id == endpoint_id,
                EndpointRow.revision == revision,
                EndpointRow.status != EndpointStatus.DELETE_IN_PROGRESS.value,
            )
            .values(**values)
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
            return bool(getattr(result, "rowcount", 0))

    async def _locked_owned(self, session: AsyncSession, name: str, owner: str) -> EndpointRow:
        query = select(EndpointRow).where(EndpointRow.name == name, EndpointRow.owner == owner).with_for_update()
        row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise EndpointNotFoundError(name)
        return row

    async def _one(self, query: Select[EndpointRow], name: str) -> ModelEndpoint:
        async with self._sessions() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise EndpointNotFoundError(name)
        return _to_entity(row)

    async def _all(self, query: Select[EndpointRow]) -> list[ModelEndpoint]:
        async with self._sessions() as session:
            return [_to_entity(row) for row in (await session.execute(query)).scalars()]


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_entity(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        row.id, row.owner, row.prefix, row.description, row.created_at, row.revoked_at, row.expires_at, row.admin
    )


class ApiKeyStore:
    """API keys, stored only as hashes. The plaintext exists once: in the return value of ``create``."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(
        self, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        return key, await self.store(key, owner, description, admin=admin, expires_at=expires_at)

    async def store(
        self, key: str, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> ApiKey:
        """Store a given key (the Helm chart's bootstrap key); storing the same key again is a no-op."""
        key_hash = hash_api_key(key)
        async with self._sessions.begin() as session:
            existing = (await session.execute(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))).scalar()
            if existing is not None:
                return _key_entity(existing)
            row = ApiKeyRow(
                id=f"key_{uuid.uuid4().hex}",
                owner=owner,
                key_hash=key_hash,
                prefix=key[: len(API_KEY_PREFIX) + 4],
                description=description,
                created_at=utcnow(),
                expires_at=expires_at,
                admin=admin,
            )
            session.add(row)
            await publish(session, f"key:{key_hash}")  # a cached "unknown key" answer must not outlive this
        return _key_entity(row)

    async def identify(self, key_hash: str) -> KeyIdentity | None:
        """Who the key with this hash acts as, or None when it is unknown or revoked."""
        query = select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
        async with self._sessions() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return None if row is None else KeyIdentity(row.id, row.owner, row.admin, row.expires_at)

    async def authenticate(self, key: str) -> str | None:
        """The owner of ``key``, or None when it is unknown, revoked or expired."""
        identity = await self.identify(hash_api_key(key))
        if identity is None or (identity.expires_at is not None and identity.expires_at <= utcnow()):
            return None
        return identity.owner

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
        if owner is not None:
            query = query.where(ApiKeyRow.owner == owner)
        async with self._sessions() as session:
            return [_key_entity(row) for row in (await session.execute(query)).scalars()]

    async def revoke(self, key_id: str, owner: str | None = None) -> ApiKey:
        """Revoke a key (only ``owner``'s when given: others' keys are indistinguishable from missing ones).
        Every gateway drops it from its cache on the notification this commits."""
        async with self._sessions.begin() as session:
            row = await session.get(ApiKeyRow, key_id)
            if row is None or (owner is not None and row.owner != owner):
                raise NotFoundError(f"API key {key_id!r} was not found.")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                await publish(session, f"key:{row.key_hash}")
            return _key_entity(row)


def _task_entity(row: AsyncTaskRow) -> AsyncTaskRecord:
    return record_of(AsyncTaskRecord, row)


class AsyncTaskStore:
    """Ownership and expiry of async completion tasks."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, task_id: str, owner: str, endpoint: ModelEndpoint, ttl: timedelta) -> AsyncTaskRecord:
        now = utcnow()
        record = AsyncTaskRecord(task_id, owner, endpoint.id, endpoint.name, now, now + ttl)
        async with self._sessions.begin() as session:
            session.add(AsyncTaskRow(**asdict(record)))
        return record

    async def get_owned(self, task_id: str, owner: str) -> AsyncTaskRecord:
        """The task if ``owner`` submitted it and it has not expired."""
        query = select(AsyncTaskRow).where(
            AsyncTaskRow.id == task_id, AsyncTaskRow.owner == owner, AsyncTaskRow.expires_at > utcnow()
        )
        async with self._sessions() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        if row is None:
            raise NotFoundError(f"Async task {task_id!r} was not found.")
        return _task_entity(row)

    async def owner_of(self, task_id: str) -> str | None:
        async with self._sessions() as session:
            row = await session.get(AsyncTaskRow, task_id)
            return None if row is None else row.owner

    async def delete(self, task_id: str) -> None:
        """Forget a task (its message could not be enqueued, so no id was handed out)."""
        async with self._sessions.begin() as session:
            await session.execute(delete(AsyncTaskRow).where(AsyncTaskRow.id == task_id))

    async def delete_expired(self) -> int:
        async with self._sessions.begin() as session:
            result = await session.execute(delete(AsyncTaskRow).where(AsyncTaskRow.expires_at <= utcnow()))
            return int(getattr(result, "rowcount", 0))
