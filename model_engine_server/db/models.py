"""SQLAlchemy models of the registry. The schema changes only through Alembic migrations in ``migrations/``."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from model_engine_server.domain.entities import EndpointStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


R = TypeVar("R", bound="DataclassInstance")


def record_of(record_type: type[R], row: object, **read: Any) -> R:
    """The domain record (a dataclass) of a row whose columns bear the record's field names; ``read`` gives the
    fields read otherwise (enums, nested records, fields without a column of their own)."""
    columns = {f.name: getattr(row, f.name) for f in fields(record_type) if f.name not in read}
    return record_type(**columns, **read)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:  # noqa: ARG002 (SQLAlchemy signature)
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:  # noqa: ARG002 (SQLAlchemy signature)
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


_STATUSES = ", ".join(f"'{s.value}'" for s in EndpointStatus)


class EndpointRow(Base):
    __tablename__ = "model_endpoints"
    __table_args__ = (
        CheckConstraint("min_workers >= 0", name="ck_model_endpoints_min_workers"),
        CheckConstraint("max_workers >= min_workers AND max_workers >= 1", name="ck_model_endpoints_max_workers"),
        CheckConstraint("per_worker >= 1", name="ck_model_endpoints_per_worker"),
        CheckConstraint("gpus >= 0", name="ck_model_endpoints_gpus"),
        CheckConstraint("num_shards >= 1", name="ck_model_endpoints_num_shards"),
        CheckConstraint("revision >= 1", name="ck_model_endpoints_revision"),
        CheckConstraint(f"status IN ({_STATUSES})", name="ck_model_endpoints_status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    created_by: Mapped[str] = mapped_column(String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    last_updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    status_reason: Mapped[str | None] = mapped_column(Text)
    available_workers: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    unavailable_workers: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    last_request_at: Mapped[datetime | None] = mapped_column(UtcDateTime())

    model_name: Mapped[str] = mapped_column(String(256), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    inference_framework: Mapped[str] = mapped_column(String(64), nullable=False)
    inference_framework_image_tag: Mapped[str] = mapped_column(String(128), nullable=False)
    num_shards: Mapped[int] = mapped_column(Integer, nullable=False)
    quantize: Mapped[str | None] = mapped_column(String(32))
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    endpoint_type: Mapped[str] = mapped_column(String(16), nullable=False)
    cpus: Mapped[str] = mapped_column(String(32), nullable=False)
    gpus: Mapped[int] = mapped_column(Integer, nullable=False)
    memory: Mapped[str] = mapped_column(String(32), nullable=False)
    gpu_type: Mapped[str | None] = mapped_column(String(64))
    storage: Mapped[str | None] = mapped_column(String(32))
    nodes_per_worker: Mapped[int] = mapped_column(Integer, nullable=False)
    min_workers: Mapped[int] = mapped_column(Integer, nullable=False)
    max_workers: Mapped[int] = mapped_column(Integer, nullable=False)
    per_worker: Mapped[int] = mapped_column(Integer, nullable=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, nullable=False)
    public_inference: Mapped[bool] = mapped_column(Boolean, nullable=False)
    high_priority: Mapped[bool] = mapped_column(Boolean, nullable=False)
    post_inference_hooks: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    default_callback_url: Mapped[str | None] = mapped_column(Text)
    chat_template_override: Mapped[str | None] = mapped_column(Text)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    # SHA-256 of the key: keys are 256-bit random tokens, so a fast hash is safe and lets us look them up.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)  # shown in listings to tell keys apart
    description: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # may manage every tenant's keys


class AsyncTaskRow(Base):
    """Who owns an async completion task; its state and result live in the Celery result backend."""

    __tablename__ = "async_tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    endpoint_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("model_endpoints.id", ondelete="SET NULL"), index=True
    )
    endpoint_name: Mapped[str] = mapped_column(String(63), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)


class FileRow(Base):
    """A user's file: metadata here, bytes at ``location`` in object storage."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(256), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    location: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class JobRow(Base):
    """A batch completion or fine-tune job (``domain.jobs.Job``); the reconciler runs it."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("parallelism >= 1", name="ck_jobs_parallelism"),
        CheckConstraint("progress_done >= 0 AND progress_total >= 0", name="ck_jobs_progress"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    owner: Mapped[str] = mapped_column(String(128), nullable=False, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    parallelism: Mapped[int] = mapped_column(Integer, nullable=False)
    max_runtime_sec: Mapped[int] = mapped_column(Integer, nullable=False)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    image: Mapped[str | None] = mapped_column(Text)
    priority: Mapped[str | None] = mapped_column(String(64))
    progress_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    restarts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    result: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False)


class JobEventRow(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True
    )
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    level: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)


class TenantLimitRow(Base):
    """One tenant's own limits; a NULL column keeps the operator's default (``LLM_ENGINE_TENANT_*``)."""

    __tablename__ = "tenant_limits"

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer)
    max_endpoints: Mapped[int | None] = mapped_column(Integer)
    max_jobs: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False, index=True)


class UsageRow(Base):
    """Tokens one tenant used on one endpoint within one UTC hour (``period_start``), written in batches; several
    rows per hour are fine, ``GET /v1/usage`` sums them per day."""

    __tablename__ = "usage_records"
    __table_args__ = (Index("ix_usage_records_tenant_period", "tenant", "period_start"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), nullable=False)
    endpoint_name: Mapped[str] = mapped_column(String(63), nullable=False)
    period_start: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False)
