"""Fixtures of the OpenAI-route tests: the real gateway on a socket and the instant TGI server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.instant_tgi import InstantTgiServer, running_instant_tgi
from model_engine_server.config import AuthMode, Settings
from tests.api.completion_support import RunningGateway, running_gateway


@pytest.fixture
def settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    database = tmp_path / "registry.db"
    shutil.copy(sqlite_template, database)
    return Settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        data_dir=tmp_path / "data",
        auth_mode=AuthMode.OPEN,
        stream_keepalive_seconds=0.05,
    )


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def tgi() -> AsyncIterator[InstantTgiServer]:
    async with running_instant_tgi(record=True) as server:
        yield server
