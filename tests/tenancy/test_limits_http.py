"""Limits as a user meets them: a 429 with ``Retry-After`` and a ``detail`` naming the limit, on every way in
(endpoints, sync and streamed completions), set by the operator's defaults or per tenant through the API; usage in
``/metrics`` and ``/v1/usage``; and the published client raising ``RateLimitExceededError``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.config import Settings
from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import ALICE, BOB, RunningGateway, running_gateway
from tests.tenancy.conftest import tenancy_settings

ADMIN = ("admin", "")  # open auth on loopback: the bootstrap owner's name is the admin
ENDPOINTS = "/v1/llm/model-endpoints"
SYNC = "/v1/llm/completions-sync?model_endpoint_name=chat"
STREAM = "/v1/llm/completions-stream?model_endpoint_name=chat"
ASYNC = "/v1/llm/completions-async?model_endpoint_name=chat"


@pytest.fixture
async def engine() -> AsyncIterator[InstantTgiServer]:
    async with running_instant_tgi(token_delay=0.02) as server:
        yield server


def gateway_settings(database_url: str, tmp_path: Path, **limits: Any) -> Settings:
    return tenancy_settings(database_url, tmp_path, keys=False, **limits)


async def set_limits(gateway: RunningGateway, tenant: str, **limits: int) -> dict[str, Any]:
    async with gateway.client() as client:
        response = await client.put(f"/v1/tenants/{tenant}/limits", json=limits, auth=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_429(response: httpx.Response, limit: str) -> None:
    assert response.status_code == 429, response.text
    assert limit in response.json()["detail"]
    assert int(response.headers["retry-after"]) >= 1


async def test_requests_per_minute_default_counts_authenticated_requests_only(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(gateway_settings(database_url, tmp_path, tenant_requests_per_minute=3)) as gateway:
        async with gateway.client() as client:
            for _ in range(5):  # health and metrics do not count
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
            for _ in range(3):
                assert (await client.get(ENDPOINTS, auth=ALICE)).status_code == 200
            assert_429(await client.get(ENDPOINTS, auth=ALICE), "requests_per_minute (3 requests per minute)")
            assert (await client.get(ENDPOINTS, auth=BOB)).status_code == 200


async def test_an_admin_overrides_a_tenants_limits_and_the_tenant_can_read_them(
    database_url: str, tmp_path: Path
) -> None:
    async with running_gateway(gateway_settings(database_url, tmp_path, tenant_max_endpoints=5)) as gateway:
        async with gateway.client() as client:
            refused = await client.put("/v1/tenants/alice-key/limits", json={"max_endpoints": 9}, auth=ALICE)
            assert refused.status_code == 403
            invalid = await client.put("/v1/tenants/alice-key/limits", json={"max_endpoints": -1}, auth=ADMIN)
            assert invalid.status_code == 400
        body = await set_limits(gateway, "alice-key", max_endpoints=1, requests_per_minute=100)
        assert body["effective"]["max_endpoints"] == 1 and body["overrides"]["tokens_per_minute"] is None
        async with gateway.client() as client:
            own = (await client.get("/v1/tenants/alice-key/limits", auth=ALICE)).json()
            assert own["effective"] == body["effective"]
            assert (await client.get("/v1/tenants/bob-key/limits", auth=ALICE)).status_code == 403

            # The endpoint quota: one endpoint, a second is refused until the first is deleted.
            first = {"name": "first", "model_name": "smollm2-135m"}
            assert (await client.post(ENDPOINTS, json=first, auth=ALICE)).status_code == 200
            second = await client.post(ENDPOINTS, json={**first, "name": "second"}, auth=ALICE)
            assert_429(second, "max_endpoints (1 model endpoints and fine-tunes)")
            assert (await client.post(ENDPOINTS, json={**first, "name": "b1"}, auth=BOB)).status_code == 200
            assert (await client.delete(f"{ENDPOINTS}/first", auth=ALICE)).status_code == 200
            assert (await client.post(ENDPOINTS, json={**first, "name": "second"}, auth=ALICE)).status_code == 200


async def test_concurrency_and_token_limits_apply_to_sync_and_streamed_completions(
    database_url: str, tmp_path: Path, engine: InstantTgiServer
) -> None:
    async with running_gateway(gateway_settings(database_url, tmp_path)) as gateway:
        await gateway.add_endpoint("chat", [engine.url], public_inference=True)
        await set_limits(gateway, "alice-key", max_concurrent_requests=1, tokens_per_minute=30)
        prompt = {"prompt": "hello there", "max_new_tokens": 20, "temperature": 0}
        async with gateway.client() as client:
            async with client.stream("POST", STREAM, json=prompt, auth=ALICE) as streaming:
                assert streaming.status_code == 200
                assert_429(await client.post(SYNC, json=prompt, auth=ALICE), "max_concurrent_requests")
                chat = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
                refused = await client.post(
                    "/v1/chat/completions", json=chat, headers={"Authorization": "Bearer alice-key"}
                )
                assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1  # the OpenAI routes too
                assert "max_concurrent_requests" in refused.json()["error"]["message"]
                assert (await client.post(SYNC, json=prompt, auth=BOB)).status_code == 200
                await streaming.aread()
            # 20 tokens streamed, then 20 in sync: 40 > 30 per minute, so the next is refused.
            assert (await client.post(SYNC, json=prompt, auth=ALICE)).status_code == 200
            assert_429(await client.post(SYNC, json=prompt, auth=ALICE), "tokens_per_minute")
            assert_429(await client.post(ASYNC, json=prompt, auth=ALICE), "tokens_per_minute")  # same admission

            metrics = (await client.get("/metrics")).text
            assert 'llm_engine_tenant_completion_tokens_total{tenant="alice-key"}' in metrics

            async def usage() -> list[dict[str, Any]]:
                response = await client.get("/v1/usage", auth=ALICE)
                assert response.status_code == 200
                entries: list[dict[str, Any]] = response.json()["usage"]
                return entries

            deadline = asyncio.get_running_loop().time() + 10
            while not (entries := await usage()) or entries[0]["requests"] < 2:
                assert asyncio.get_running_loop().time() < deadline, entries
                await asyncio.sleep(0.05)
            today = datetime.now(UTC).date().isoformat()
            assert entries == [
                {"endpoint_name": "chat", "day": today, "requests": 2, "prompt_tokens": 4, "completion_tokens": 40}
            ]
            tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
            later = await client.get("/v1/usage", params={"start": tomorrow}, auth=ALICE)
            assert later.status_code == 200 and later.json()["usage"] == []  # a window ending before it starts
            assert (await client.get("/v1/usage", params={"start": "yesterday"}, auth=ALICE)).status_code == 400
            assert (await client.get("/v1/usage", params={"tenant": "bob-key"}, auth=ALICE)).status_code == 403


PEER_SCRIPT = """
import json
from llmengine import Model
from llmengine.errors import RateLimitExceededError
out = {"first": len(Model.list().model_endpoints)}
try:
    Model.list()
except RateLimitExceededError as exc:
    out["raised"] = type(exc).__name__
print(json.dumps(out))
"""


async def test_the_published_client_raises_rate_limit_exceeded(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(database_url, tmp_path, tenant_requests_per_minute=1)) as gateway:
        env = {"LLM_ENGINE_BASE_PATH": gateway.url, "SCALE_API_KEY": "peer-key"}
        env |= {"LLM_ENGINE_DISABLE_VERSION_CHECK": "true", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        result = await asyncio.to_thread(run_peer_script, PEER_SCRIPT, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"first": 0, "raised": "RateLimitExceededError"}


OPENAI_SCRIPT = """
import json, os, time
import openai
base, key = os.environ["BASE"] + "/v1", os.environ["KEY"]
impatient = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
out = {"admitted": 0}
while True:  # spend the minute's budget
    try:
        impatient.models.list()
        out["admitted"] += 1
    except openai.RateLimitError as exc:
        retry_after = exc.response.headers["retry-after"]
        out["error"] = {"class": type(exc).__name__, "status": exc.status_code, "retry_after": retry_after}
        break
patient = openai.OpenAI(base_url=base, api_key=key, max_retries=3)
started = time.monotonic()
calls = [patient.models.with_raw_response.list() for _ in range(3)]  # about one request a second refills
out["patient"] = {
    "statuses": [raw.status_code for raw in calls],
    "retries_taken": sum(raw.retries_taken for raw in calls),
    "seconds": time.monotonic() - started,
}
print(json.dumps(out))
"""


async def test_openai_clients_back_off_on_the_429_and_then_succeed(database_url: str, tmp_path: Path) -> None:
    async with running_gateway(gateway_settings(database_url, tmp_path, tenant_requests_per_minute=60)) as gateway:
        env = {"BASE": gateway.url, "KEY": "openai-key", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        result = await asyncio.to_thread(run_peer_script, OPENAI_SCRIPT, env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["admitted"] >= 60  # a full bucket, plus what refilled while it was spent
    assert out["error"] == {"class": "RateLimitError", "status": 429, "retry_after": "1"}
    # With the budget spent, three calls cannot all be admitted at once: the SDK waited Retry-After and retried.
    assert out["patient"]["statuses"] == [200, 200, 200]
    assert out["patient"]["retries_taken"] >= 1 and out["patient"]["seconds"] >= 1.0
