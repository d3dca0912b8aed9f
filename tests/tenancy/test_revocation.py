"""Key checks are cached, and a revocation reaches every gateway process within a second."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.db.repositories import ApiKeyStore
from tests.tenancy.processes import start_gateways

LIST = "/v1/llm/model-endpoints"


@pytest.fixture
def two_gateways(database_url: str, tmp_path: Path) -> Iterator[list[str]]:
    env = os.environ | {
        "LLM_ENGINE_DATABASE_URL": database_url,
        "LLM_ENGINE_DATA_DIR": str(tmp_path / "data"),
        "LLM_ENGINE_AUTH_MODE": "keys",
    }
    with start_gateways(2, env) as urls:
        yield urls


@pytest.fixture
def key_store(sessions: async_sessionmaker[AsyncSession]) -> ApiKeyStore:
    return ApiKeyStore(sessions)


async def test_revocation_reaches_two_gateway_processes_within_a_second(
    two_gateways: list[str], key_store: ApiKeyStore
) -> None:
    key, record = await key_store.create("team-a", "leaked")
    async with httpx.AsyncClient(auth=(key, ""), timeout=5) as client:
        for url in two_gateways:  # both have the key cached now
            assert (await client.get(url + LIST)).status_code == 200

        await key_store.revoke(record.id)  # what `model-engine keys revoke` does, from a third process
        revoked_at = time.monotonic()
        refused_after: dict[str, float] = {}
        while len(refused_after) < 2 and time.monotonic() - revoked_at < 3:
            for url in two_gateways:
                if url not in refused_after and (await client.get(url + LIST)).status_code == 401:
                    refused_after[url] = time.monotonic() - revoked_at
            await asyncio.sleep(0.01)
    assert set(refused_after) == set(two_gateways), "a gateway kept accepting the revoked key"
    assert max(refused_after.values()) < 1.0, refused_after
