"""Fixtures of the orchestration tests: the endpoint registry on each database and a started local orchestrator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.orchestration.local import LocalOrchestrator
from tests.orchestration.helpers import FAST_POLICY, fake_settings


@pytest.fixture
def registry(sessions: async_sessionmaker[AsyncSession]) -> EndpointRegistry:
    return EndpointRegistry(sessions)


@pytest.fixture
async def orchestrator(tmp_path: Path) -> AsyncIterator[LocalOrchestrator]:
    """A started local orchestrator with fast supervision, closed (its replicas stopped) after the test."""
    local = LocalOrchestrator(fake_settings(tmp_path / "data"), FAST_POLICY)
    await local.start()
    yield local
    await local.close()
