"""``/v1/api-keys``: an admin creates keys for any tenant; a tenant sees and revokes only its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from model_engine_server.db.repositories import ApiKeyStore
from model_engine_server.db.session import create_engine, create_session_factory
from tests.tenancy.conftest import ADMIN_KEY, KeysGateway

KEYS = "/v1/api-keys"
LIST = "/v1/llm/model-endpoints"


async def test_admin_creates_a_key_that_is_shown_once_and_works(keys_gateway: KeysGateway) -> None:
    gw = keys_gateway
    created = await gw.client.post(KEYS, json={"owner": "team-a", "label": "ci"}, headers=gw.as_key(ADMIN_KEY))
    assert created.status_code == 200
    body = created.json()
    assert body["owner"] == "team-a" and body["label"] == "ci" and body["key"].startswith("llme_")
    assert (await gw.client.get(LIST, headers=gw.as_key(body["key"]))).status_code == 200

    listing = await gw.client.get(KEYS, headers=gw.as_key(body["key"]))
    assert [k["id"] for k in listing.json()["api_keys"]] == [body["id"]]
    assert body["key"] not in listing.text  # stored hashed: never shown again


async def test_a_tenant_manages_only_its_own_keys(keys_gateway: KeysGateway) -> None:
    gw = keys_gateway
    key_a, key_b = await gw.new_key("team-a"), await gw.new_key("team-b")

    refused = await gw.client.post(KEYS, json={"owner": "team-b"}, headers=gw.as_key(key_a))
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert (await gw.client.post(KEYS, json={"admin": True}, headers=gw.as_key(key_a))).status_code == 403
    own = await gw.client.post(KEYS, json={"label": "second"}, headers=gw.as_key(key_a))
    assert own.status_code == 200 and own.json()["owner"] == "team-a"

    everything = await gw.client.get(KEYS, headers=gw.as_key(ADMIN_KEY))
    owners = {k["owner"] for k in everything.json()["api_keys"]}
    assert owners == {"admin", "team-a", "team-b"}
    b_id = next(k["id"] for k in everything.json()["api_keys"] if k["owner"] == "team-b")
    assert (await gw.client.get(KEYS, params={"owner": "team-b"}, headers=gw.as_key(key_a))).status_code == 403
    assert (await gw.client.delete(f"{KEYS}/{b_id}", headers=gw.as_key(key_a))).status_code == 404
    assert (await gw.client.get(LIST, headers=gw.as_key(key_b))).status_code == 200


async def test_revoking_through_the_api_refuses_the_key_at_once(keys_gateway: KeysGateway) -> None:
    gw = keys_gateway
    key = await gw.new_key("team-a")
    key_id = (await gw.client.get(KEYS, headers=gw.as_key(key))).json()["api_keys"][0]["id"]
    revoked = await gw.client.delete(f"{KEYS}/{key_id}", headers=gw.as_key(key))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = await gw.client.get(LIST, headers=gw.as_key(key))
    assert response.status_code == 401


async def test_expired_keys_are_refused_and_past_expiry_is_a_400(keys_gateway: KeysGateway, database_url: str) -> None:
    gw = keys_gateway
    engine = create_engine(database_url)
    expired = "llme_expired-key-0123456789"
    await ApiKeyStore(create_session_factory(engine)).store(
        expired, "team-old", expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    await engine.dispose()
    assert (await gw.client.get(LIST, headers=gw.as_key(expired))).status_code == 401

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = await gw.client.post(KEYS, json={"owner": "t", "expires_at": past}, headers=gw.as_key(ADMIN_KEY))
    assert refused.status_code == 400 and "expires_at" in refused.json()["detail"]

    soon = datetime.now(UTC) + timedelta(hours=1)
    key = await gw.new_key("team-a", expires_at=soon.isoformat())
    listed = (await gw.client.get(KEYS, headers=gw.as_key(key))).json()["api_keys"][0]
    assert datetime.fromisoformat(listed["expires_at"]) == soon


async def test_bad_input_is_a_4xx_in_the_documented_format(keys_gateway: KeysGateway) -> None:
    gw = keys_gateway
    response = await gw.client.post(KEYS, json={"owner": "has space"}, headers=gw.as_key(ADMIN_KEY))
    assert response.status_code == 400 and "detail" in response.json()
    assert (await gw.client.delete(f"{KEYS}/key_missing", headers=gw.as_key(ADMIN_KEY))).status_code == 404
    assert (await gw.client.get(KEYS)).status_code == 401
