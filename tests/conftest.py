"""Shared fixtures: real databases (PostgreSQL and SQLite) and the gateway app over HTTP.

PostgreSQL: one fresh database per test run, created and dropped here; every test starts from empty tables.
SQLite: a migrated template file, copied for each test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from model_engine_server.db.migrate import upgrade
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import RunningGateway, running_gateway
from tests.fakes import FakeResolver

POSTGRES_ADMIN_DSN = os.environ.get("LLM_ENGINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = ("async_tasks", "api_keys", "model_endpoints", "tenant_limits", "usage_records", "job_events", "jobs", "files")


def _ensure_postgres_running() -> None:
    async def ping() -> None:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
        await connection.close()

    try:
        asyncio.run(ping())
    except (OSError, asyncpg.PostgresError):
        versions = sorted(os.listdir("/etc/postgresql"))
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=True, timeout=60
        )
        asyncio.run(ping())


async def admin_sql(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run (dropped at the end)."""
    _ensure_postgres_running()
    name = f"llm_engine_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "registry.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite registry of this test's own: a copy of the session's template, as a database URL."""
    database = tmp_path / "registry.db"
    shutil.copy(sqlite_template, database)
    return f"sqlite+aiosqlite:///{database}"


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on PostgreSQL and on SQLite, starting from empty tables."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")

        async def truncate() -> None:
            connection = await asyncpg.connect(dsn)
            try:
                await connection.execute(f"TRUNCATE {', '.join(TABLES)} CASCADE")
            finally:
                await connection.close()

        asyncio.run(truncate())
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    copy = tmp_path / "registry.db"
    shutil.copy(template, copy)
    return f"sqlite+aiosqlite:///{copy}"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on ``database_url`` (for stores and registries under test), its engine disposed after."""
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", auth_mode=AuthMode.OPEN)


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
async def app_client(settings: Settings, resolver: FakeResolver) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway app (lifespan included) behind an httpx client; authenticate per request."""
    app = create_app(settings, resolver=resolver)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """The real gateway on a loopback socket (for streams and real upstream servers); its FakeResolver routes."""
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def tgi() -> AsyncIterator[InstantTgiServer]:
    """The instant TGI server on loopback, recording the requests it gets."""
    async with running_instant_tgi(record=True) as server:
        yield server
