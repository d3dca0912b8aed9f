"""The registry of files: which tenant owns which bytes. Others' files are simply not found."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.models import FileRow, utcnow
from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.domain.files import StoredFile


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex}"


def _entity(row: FileRow) -> StoredFile:
    return StoredFile(row.id, row.owner, row.filename, row.size, row.location, row.created_at)


class FileRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, *, file_id: str, owner: str, filename: str, size: int, location: str) -> StoredFile:
        row = FileRow(id=file_id, owner=owner, filename=filename, size=size, location=location, created_at=utcnow())
        async with self._sessions.begin() as session:
            session.add(row)
        return _entity(row)

    async def get_owned(self, file_id: str, owner: str) -> StoredFile:
        async with self._sessions() as session:
            row = await session.get(FileRow, file_id)
        if row is None or row.owner != owner:
            raise NotFoundError(f"File {file_id!r} not found.")
        return _entity(row)

    async def list_owned(self, owner: str) -> list[StoredFile]:
        async with self._sessions() as session:
            rows = await session.scalars(select(FileRow).where(FileRow.owner == owner).order_by(FileRow.created_at))
            return [_entity(row) for row in rows]

    async def remove(self, file_id: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(FileRow).where(FileRow.id == file_id))
