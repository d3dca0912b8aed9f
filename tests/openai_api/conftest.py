"""Fixtures of the OpenAI-route tests: the real gateway on a socket and the instant TGI server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model_engine_server.config import Settings
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import RunningGateway, loopback_settings, running_gateway


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return loopback_settings(sqlite_url, tmp_path)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def tgi() -> AsyncIterator[InstantTgiServer]:
    async with running_instant_tgi(record=True) as server:
        yield server
