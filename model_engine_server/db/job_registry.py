"""The registry of jobs. The gateway creates them and records wishes (cancel, priority); the reconciler writes the
rest (status, progress, results). Every write names the statuses it applies to, so a cancel recorded meanwhile wins."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.models import JobEventRow, JobRow, record_of, utcnow
from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.domain.fine_tuning import FineTunedModel
from model_engine_server.domain.jobs import Job, JobEvent, JobKind, JobResources, JobStatus

_ACTIVE = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex}"


def _entity(row: JobRow) -> Job:
    return record_of(
        Job,
        row,
        kind=JobKind(row.kind),
        status=JobStatus(row.status),
        resources=JobResources(**row.resources),
        result=dict(row.result),
    )


class JobRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, job: Job) -> Job:
        values = asdict(job)
        values["resources"] = asdict(job.resources)
        values["kind"], values["status"] = job.kind.value, job.status.value
        async with self._sessions.begin() as session:
            session.add(JobRow(**values))
            await session.flush()  # the event row references the job row
            session.add(JobEventRow(job_id=job.id, timestamp=job.created_at, level="info", message="Job queued."))
        return job

    async def get_owned(self, job_id: str, owner: str, kind: JobKind | None = None) -> Job:
        async with self._sessions() as session:
            row = await session.get(JobRow, job_id)
        if row is None or row.owner != owner or (kind is not None and row.kind != kind.value):
            raise NotFoundError(f"Job {job_id!r} not found.")
        return _entity(row)

    async def get(self, job_id: str) -> Job:
        async with self._sessions() as session:
            row = await session.get(JobRow, job_id)
        if row is None:
            raise NotFoundError(f"Job {job_id!r} not found.")
        return _entity(row)

    async def list_all(self) -> list[Job]:
        async with self._sessions() as session:
            return [_entity(row) for row in await session.scalars(select(JobRow).order_by(JobRow.created_at))]

    async def list_owned(self, owner: str, kind: JobKind | None = None) -> list[Job]:
        query = select(JobRow).where(JobRow.owner == owner).order_by(JobRow.created_at)
        if kind is not None:
            query = query.where(JobRow.kind == kind.value)
        async with self._sessions() as session:
            return [_entity(row) for row in await session.scalars(query)]

    async def find_fine_tuned_model(self, owner: str, name: str) -> FineTunedModel | None:
        """The owner's successful fine-tune whose result is the model ``name``."""
        for job in await self.list_owned(owner, JobKind.FINE_TUNE):
            if job.status is JobStatus.COMPLETED and job.result.get("fine_tuned_model") == name:
                return FineTunedModel(name, owner, str(job.spec["model"]), job.result["checkpoint_path"], job.id)
        return None

    async def count_active(self, owner: str, kind: JobKind | None = None) -> int:
        """The owner's queued or running jobs (of ``kind``, or of every kind)."""
        query = select(func.count()).where(JobRow.owner == owner, JobRow.status.in_(_ACTIVE))
        if kind is not None:
            query = query.where(JobRow.kind == kind.value)
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def list_active(self) -> list[Job]:
        """Jobs the reconciler still has work for: queued or running."""
        async with self._sessions() as session:
            rows = await session.scalars(select(JobRow).where(JobRow.status.in_(_ACTIVE)).order_by(JobRow.created_at))
            return [_entity(row) for row in rows]

    async def request_cancel(self, job_id: str) -> bool:
        """Record the wish; false when the job had already finished."""
        return await self._update(job_id, _ACTIVE, cancel_requested=True)

    async def set_priority(self, job_id: str, priority: str | None) -> None:
        await self._update(job_id, None, priority=priority)

    async def update(self, job_id: str, *, expect: tuple[str, ...] = _ACTIVE, **values: Any) -> bool:
        """The reconciler's write: applied only while the job is in one of ``expect`` (an active status)."""
        if isinstance(values.get("status"), JobStatus):
            values["status"] = values["status"].value
        return await self._update(job_id, expect, **values)

    async def _update(self, job_id: str, expect: tuple[str, ...] | None, **values: Any) -> bool:
        query = update(JobRow).where(JobRow.id == job_id)
        if expect is not None:
            query = query.where(JobRow.status.in_(expect))
        async with self._sessions.begin() as session:
            result = await session.execute(query.values(**values))
        return bool(getattr(result, "rowcount", 0))

    async def add_event(self, job_id: str, message: str, level: str = "info", at: datetime | None = None) -> None:
        async with self._sessions.begin() as session:
            session.add(JobEventRow(job_id=job_id, timestamp=at or utcnow(), level=level, message=message))

    async def events(self, job_id: str) -> list[JobEvent]:
        query = select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
        async with self._sessions() as session:
            return [JobEvent(row.timestamp, row.level, row.message) for row in await session.scalars(query)]
