"""A keys-mode gateway with an admin bootstrap key, for the tenancy API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from tests.fakes import FakeResolver

ADMIN_KEY = "llme_admin-bootstrap-secret"


@dataclass
class KeysGateway:
    client: httpx.AsyncClient
    resolver: FakeResolver

    def as_key(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    async def new_key(self, owner: str, **fields: Any) -> str:
        response = await self.client.post(
            "/v1/api-keys", json={"owner": owner, **fields}, headers=self.as_key(ADMIN_KEY)
        )
        assert response.status_code == 200, response.text
        key: str = response.json()["key"]
        return key


def tenancy_settings(database_url: str, tmp_path: Path, *, keys: bool, **overrides: Any) -> Settings:
    """Keys mode with ``ADMIN_KEY`` as the admin's key, or open mode (the caller named ``admin`` is the admin)."""
    auth: dict[str, Any] = {"auth_mode": AuthMode.KEYS, "bootstrap_api_key": ADMIN_KEY} if keys else {}
    return Settings(database_url=database_url, data_dir=tmp_path / "data", usage_flush_seconds=0.05, **auth | overrides)


@pytest.fixture
async def keys_gateway(database_url: str, tmp_path: Path) -> AsyncIterator[KeysGateway]:
    resolver = FakeResolver()
    app = create_app(tenancy_settings(database_url, tmp_path, keys=True), resolver=resolver)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield KeysGateway(client, resolver)
