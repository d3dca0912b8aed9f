"""Migrations are the only way the schema changes: they must go up and down cleanly on both databases and produce
exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from model_engine_server.db.migrate import downgrade, upgrade
from model_engine_server.db.models import Base
from model_engine_server.db.session import create_engine
from tests.conftest import POSTGRES_ADMIN_DSN, admin_sql

TABLES = {"model_endpoints", "api_keys", "async_tasks", "tenant_limits", "usage_records", "files", "jobs", "job_events"}


def _inspect(database_url: str) -> tuple[set[str], list[object]]:
    """The tables present and the differences between the database and the models (empty when they agree)."""

    def read(connection: Connection) -> tuple[set[str], list[object]]:
        tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return tables, list(compare_metadata(context, Base.metadata))

    async def run() -> tuple[set[str], list[object]]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a SQLite file, or a PostgreSQL database of its own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    request.getfixturevalue("postgres_url")  # makes sure PostgreSQL runs
    name = f"llm_engine_migrations_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_upgrade_downgrade_upgrade_matches_the_models(empty_database: str) -> None:
    upgrade(empty_database)
    tables, differences = _inspect(empty_database)
    assert tables == TABLES
    assert differences == []

    downgrade(empty_database, "base")
    assert _inspect(empty_database)[0] == set()

    upgrade(empty_database)
    assert _inspect(empty_database)[0] == TABLES
