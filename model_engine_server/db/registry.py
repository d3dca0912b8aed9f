"""The registry's public face: its stores over one connection pool, typed as the domain's ports.

``api/``, ``tasks/`` and the orchestration layer open the registry here and never touch the models, the
repositories or the sessions behind it (import-linter holds that).
"""

from __future__ import annotations

from sqlalchemy import text

from model_engine_server.db.file_registry import FileRegistry
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.notifications import ChangeFeed, OnChange
from model_engine_server.db.repositories import ApiKeyStore, AsyncTaskStore, EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.db.tenancy import TenantLimitStore, UsageStore
from model_engine_server.domain.ports import ApiKeys, AsyncTaskRecords, EndpointStore


class Registry:
    """Open it inside the event loop that will use it (its connections belong to that loop); ``close`` at the end."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._engine = create_engine(database_url)
        self._sessions = create_session_factory(self._engine)
        self.endpoints: EndpointStore = EndpointRegistry(self._sessions)
        self.keys: ApiKeys = ApiKeyStore(self._sessions)
        self.tasks: AsyncTaskRecords = AsyncTaskStore(self._sessions)
        self.tenant_limits = TenantLimitStore(self._sessions)
        self.usage = UsageStore(self._sessions)
        self.files = FileRegistry(self._sessions)  # users' files (metadata; the bytes are in object storage)
        self.jobs = JobRegistry(self._sessions)  # batch completions and fine-tunes

    def change_feed(self, on_change: OnChange) -> ChangeFeed:
        """Revoked keys and changed tenant limits, from every process (see ``db/notifications.py``)."""
        return ChangeFeed(self._database_url, self._sessions, on_change)

    async def check(self) -> None:
        """A real round trip to the database (``/readyz``); raises when it is unreachable."""
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self._engine.dispose()
