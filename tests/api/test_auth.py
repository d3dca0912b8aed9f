"""Authentication as the published client sends it, in both auth modes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from model_engine_server.db.repositories import ApiKeyStore
from model_engine_server.db.session import create_engine, create_session_factory
from tests.fakes import FakeResolver

LIST = "/v1/llm/model-endpoints"


async def test_no_credentials_is_401_in_the_documented_format(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get(LIST)
    assert response.status_code == 401
    assert "Missing API key" in response.json()["detail"]


async def test_basic_auth_and_x_api_key_name_the_same_tenant(app_client: httpx.AsyncClient) -> None:
    created = await app_client.post(LIST, json={"name": "e1", "model_name": "smollm2-135m"}, auth=("team-a", ""))
    assert created.status_code == 200
    by_header = await app_client.get(LIST, headers={"x-api-key": "team-a"})
    assert [e["name"] for e in by_header.json()["model_endpoints"]] == ["e1"]


async def test_malformed_basic_credentials_are_401(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get(LIST, headers={"Authorization": "Basic %%%"})
    assert response.status_code == 401


@pytest.fixture
async def keyed(database_url: str, tmp_path: object) -> AsyncIterator[tuple[httpx.AsyncClient, ApiKeyStore]]:
    settings = Settings(database_url=database_url, auth_mode=AuthMode.KEYS, bootstrap_api_key="llme_bootstrap-secret")
    app = create_app(settings, resolver=FakeResolver())
    engine = create_engine(database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client, ApiKeyStore(create_session_factory(engine))
    await engine.dispose()


async def test_keys_mode_accepts_issued_keys_and_rejects_unknown_and_revoked(
    keyed: tuple[httpx.AsyncClient, ApiKeyStore],
) -> None:
    client, keys = keyed
    key, record = await keys.create("team-a")
    assert (await client.get(LIST, auth=(key, ""))).status_code == 200
    assert (await client.get(LIST, auth=("llme_made-up", ""))).status_code == 401

    # Revoked through another connection (as `model-engine keys revoke` does): refused within a second.
    await keys.revoke(record.id)
    response = await refused_within_a_second(client, {"x-api-key": key})
    assert "revoked" in response.json()["detail"]


async def refused_within_a_second(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    """Gateways cache key checks; a revocation reaches them within a second."""
    deadline = time.monotonic() + 1.0
    response = await client.get(LIST, headers=headers)
    while response.status_code == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        response = await client.get(LIST, headers=headers)
    assert response.status_code == 401
    return response


async def test_keys_are_stored_hashed_and_bootstrap_key_works(keyed: tuple[httpx.AsyncClient, ApiKeyStore]) -> None:
    client, keys = keyed
    assert (await client.get(LIST, auth=("llme_bootstrap-secret", ""))).status_code == 200
    key, _ = await keys.create("team-b")
    stored = await keys.list()
    assert {k.owner for k in stored} == {"admin", "team-b"}
    assert all(key not in repr(k) for k in stored)


async def test_keys_of_different_owners_are_isolated(keyed: tuple[httpx.AsyncClient, ApiKeyStore]) -> None:
    client, keys = keyed
    key_a, _ = await keys.create("team-a")
    key_b, _ = await keys.create("team-b")
    await client.post(LIST, json={"name": "a-model", "model_name": "smollm2-135m"}, auth=(key_a, ""))
    assert (await client.get(f"{LIST}/a-model", auth=(key_b, ""))).status_code == 404
    assert (await client.get(f"{LIST}/a-model", auth=(key_a, ""))).status_code == 200


async def test_bearer_token_names_the_same_tenant_in_open_mode(app_client: httpx.AsyncClient) -> None:
    await app_client.post(LIST, json={"name": "e1", "model_name": "smollm2-135m"}, auth=("team-a", ""))
    by_bearer = await app_client.get(LIST, headers={"Authorization": "Bearer team-a"})
    assert [e["name"] for e in by_bearer.json()["model_endpoints"]] == ["e1"]


async def test_keys_mode_openai_routes_take_issued_keys_as_bearer_tokens(
    keyed: tuple[httpx.AsyncClient, ApiKeyStore],
) -> None:
    client, keys = keyed
    key, _ = await keys.create("team-a")
    await client.post(LIST, json={"name": "mine", "model_name": "smollm2-135m"}, headers={"x-api-key": key})
    listing = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    refused = await client.get("/v1/models", headers={"Authorization": "Bearer llme_made-up"})

    assert [model["id"] for model in listing.json()["data"]] == ["mine"]
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


async def test_keys_mode_accepts_issued_keys_as_bearer_tokens(keyed: tuple[httpx.AsyncClient, ApiKeyStore]) -> None:
    client, keys = keyed
    key, record = await keys.create("team-a")
    assert (await client.get(LIST, headers={"Authorization": f"Bearer {key}"})).status_code == 200
    assert (await client.get(LIST, headers={"Authorization": "Bearer llme_made-up"})).status_code == 401
    await keys.revoke(record.id)
    await refused_within_a_second(client, {"Authorization": f"Bearer {key}"})
