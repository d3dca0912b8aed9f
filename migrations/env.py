"""Alembic environment: runs migrations on the async engine for the configured database (Postgres or SQLite)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from model_engine_server.config import load_settings
from model_engine_server.db.models import Base
from model_engine_server.db.session import create_engine

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    # `model-engine migrate` passes the URL in; running `alembic` by hand falls back to the settings.
    return str(config.attributes.get("database_url") or load_settings().database_url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite can only alter tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
