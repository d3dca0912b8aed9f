"""Change notifications between processes sharing one registry: a revoked key, a tenant's new limits.

PostgreSQL: ``pg_notify`` inside the writing transaction (delivered on commit, so never ahead of the data) and one
``LISTEN`` connection per process. SQLite (one machine): the listener polls the two indexed timestamps the writers
set (``api_keys.revoked_at``, ``tenant_limits.updated_at``), so a ``model-engine keys revoke`` in another process is
seen within one poll interval too. Payloads: ``key:<sha256>``, ``tenant:<name>``, and ``*`` when notifications may
have been missed (the listener reconnected): drop every cached entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.models import ApiKeyRow, TenantLimitRow, utcnow

CHANNEL = "llm_engine_tenancy"
EVERYTHING = "*"
log = logging.getLogger(__name__)

OnChange = Callable[[str], None]


async def publish(session: AsyncSession, payload: str) -> None:
    """Announce a change to every process once ``session``'s transaction commits (PostgreSQL; SQLite is polled)."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload})


class ChangeFeed:
    """Calls ``on_change(payload)`` for every change another process (or this one) made; runs until ``close``."""

    def __init__(
        self,
        database_url: str,
        sessions: async_sessionmaker[AsyncSession],
        on_change: OnChange,
        *,
        poll_seconds: float = 0.25,
    ) -> None:
        self._url = make_url(database_url)
        self._sessions = sessions
        self._on_change = on_change
        self._poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set once changes are being received

    async def start(self) -> None:
        run = self._listen if self._url.get_backend_name() == "postgresql" else self._poll
        self._task = asyncio.create_task(run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        dsn = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                connection = await asyncpg.connect(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("change feed cannot connect (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1)
                continue
            try:
                await connection.add_listener(CHANNEL, lambda *args: self._on_change(str(args[3])))
                self._on_change(EVERYTHING)  # anything announced while we were not listening is unknown
                self.connected.set()
                while not connection.is_closed():
                    await asyncio.sleep(0.5)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
            log.warning("change feed connection lost; reconnecting")

    async def _poll(self) -> None:
        since = utcnow()
        self.connected.set()
        while True:
            await asyncio.sleep(self._poll_seconds)
            # Overlap the windows: a writer's clock read and its commit are not one instant.
            started = utcnow()
            try:
                for payload in await self._changed_since(since - timedelta(seconds=2)):
                    self._on_change(payload)
                since = started
            except Exception:  # a locked or briefly missing database file: try again next round
                log.warning("change feed poll failed", exc_info=True)

    async def _changed_since(self, since: object) -> list[str]:
        async with self._sessions() as session:
            keys = await session.execute(select(ApiKeyRow.key_hash).where(ApiKeyRow.revoked_at >= since))
            tenants = await session.execute(select(TenantLimitRow.tenant).where(TenantLimitRow.updated_at >= since))
            return [f"key:{h}" for h in keys.scalars()] + [f"tenant:{t}" for t in tenants.scalars()]
