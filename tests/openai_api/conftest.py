"""The OpenAI-route tests run the gateway on a socket (the root `gateway` and `tgi` fixtures) with fast pings."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_engine_server.config import Settings
from tests.api.completion_support import loopback_settings


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return loopback_settings(sqlite_url, tmp_path)
