"""Fixtures of the completion routes' tests: the gateway app on loopback and an instant TGI server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from model_engine_server.config import Settings
from testkit.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import RunningGateway, running_gateway


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    """The gateway app for this module's ``settings`` fixture, served by uvicorn on a free port."""
    async with running_gateway(settings) as running:
        yield running


@pytest.fixture
async def tgi() -> AsyncIterator[InstantTgiServer]:
    async with running_instant_tgi(record=True) as server:
        yield server
