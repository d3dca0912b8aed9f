"""Errors of the OpenAI routes, always in OpenAI's envelope with the status the ``openai`` SDK maps to its typed
exceptions; tenancy of ``model`` and ``/v1/models``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.testing.ports import free_port
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import BOB, RunningGateway
from tests.openai_api.support import BEARER, CHAT, COMPLETIONS, post

MESSAGES = [{"role": "user", "content": "hi"}]


def assert_error(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MESSAGES, "temperature": 2.5}, "temperature"),
        ({"messages": MESSAGES, "top_p": 0}, "top_p"),
        ({"messages": MESSAGES, "n": 0}, "n"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
        ({"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
        ({"messages": MESSAGES, "response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_bad_values_are_400_naming_the_field(
    gateway: RunningGateway, tgi: InstantTgiServer, body: dict[str, Any], param: str
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    error = assert_error(await post(gateway, CHAT, {"model": "llm", **body}), 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert tgi.requests == []


async def test_invalid_json_and_missing_fields_are_400(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        broken = await client.post(CHAT, content=b"{not json", headers={**BEARER, "content-type": "application/json"})
    assert_error(broken, 400)
    assert_error(await post(gateway, COMPLETIONS, {"model": "llm"}), 400, param="prompt")
    assert_error(await post(gateway, COMPLETIONS, {"prompt": "x"}), 400, param="model")


async def test_tgi_refuses_what_it_cannot_do_naming_the_field(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    streamed_n = {"model": "llm", "messages": MESSAGES, "n": 2, "stream": True}
    assert_error(await post(gateway, CHAT, streamed_n), 400, param="n")
    assert_error(await post(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "top_k": 5}), 400, param="top_k")
    streamed_prompts = {"model": "llm", "prompt": ["a", "b"], "stream": True}
    assert_error(await post(gateway, COMPLETIONS, streamed_prompts), 400, param="prompt")
    assert tgi.requests == []


async def test_missing_or_unknown_credentials_are_401(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        missing = await client.post(CHAT, json={"model": "llm", "messages": MESSAGES})
        models = await client.get("/v1/models")
    error = assert_error(missing, 401)
    assert error["type"] == "authentication_error"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(models, 401)


async def test_unknown_model_is_404_model_not_found(gateway: RunningGateway) -> None:
    error = assert_error(await post(gateway, CHAT, {"model": "nope", "messages": MESSAGES}), 404, param="model")
    assert error["code"] == "model_not_found"
    async with gateway.client() as client:
        missing = await client.get("/v1/models/nope", headers=BEARER)
    assert assert_error(missing, 404, param="model")["code"] == "model_not_found"


async def test_another_tenants_private_endpoint_is_invisible(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("bobs-private", [tgi.url], owner=BOB)
    await gateway.add_endpoint("bobs-public", [tgi.url], owner=BOB, public_inference=True)
    await gateway.add_endpoint("mine", [tgi.url])

    error = assert_error(await post(gateway, CHAT, {"model": "bobs-private", "messages": MESSAGES}), 404, param="model")
    assert error["code"] == "model_not_found"
    public = await post(gateway, CHAT, {"model": "bobs-public", "messages": MESSAGES, "max_tokens": 1})
    assert public.status_code == 200
    async with gateway.client() as client:
        listing = (await client.get("/v1/models", headers=BEARER)).json()
        card = (await client.get("/v1/models/mine", headers=BEARER)).json()
        private = await client.get("/v1/models/bobs-private", headers=BEARER)
    assert listing["object"] == "list"
    assert [model["id"] for model in listing["data"]] == ["bobs-public", "mine"]
    assert card["id"] == "mine" and card["object"] == "model" and isinstance(card["created"], int)
    assert "bob-key" not in str(listing)  # owner names are API keys in open mode
    assert_error(private, 404, param="model")


async def test_not_ready_is_503_and_over_context_is_400(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("starting", [tgi.url], status=EndpointStatus.UPDATE_IN_PROGRESS)
    await gateway.add_endpoint("llm", [tgi.url])
    not_ready = assert_error(await post(gateway, CHAT, {"model": "starting", "messages": MESSAGES}), 503)
    assert "not ready" in not_ready["message"]
    assert_error(await post(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "max_tokens": 10**6}), 400)
    assert tgi.requests == []


async def test_engine_answers_become_openai_errors(gateway: RunningGateway) -> None:
    async with running_instant_tgi(max_concurrent=0) as busy, running_instant_tgi(max_total_tokens=8) as strict:
        await gateway.add_endpoint("busy", [busy.url])
        await gateway.add_endpoint("strict", [strict.url])
        overloaded = await post(gateway, CHAT, {"model": "busy", "messages": MESSAGES})
        streamed = await post(gateway, CHAT, {"model": "busy", "messages": MESSAGES, "stream": True})
        # Within the model's context, beyond this TGI's limit: the engine's own message reaches the caller as a 400.
        refused = await post(gateway, COMPLETIONS, {"model": "strict", "prompt": "x", "max_tokens": 10})
    assert assert_error(overloaded, 429)["type"] == "rate_limit_error"
    assert_error(streamed, 429)  # refused before the first chunk: an ordinary HTTP error
    assert "max_new_tokens" in assert_error(refused, 400)["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_engine_that_is_down_is_503(gateway: RunningGateway, stream: bool) -> None:
    await gateway.add_endpoint("down", [f"http://127.0.0.1:{free_port()}"])  # nothing listens there
    response = await post(gateway, CHAT, {"model": "down", "messages": MESSAGES, "stream": stream})
    error = assert_error(response, 503)  # before the first chunk: an ordinary HTTP error, streamed or not
    assert error["type"] == "server_error" and "replica" in error["message"]


async def test_native_routes_keep_their_detail_format(gateway: RunningGateway) -> None:
    async with gateway.client() as client:
        native = await client.post("/v1/llm/completions-sync", params={"model_endpoint_name": "nope"}, json={})
    assert "detail" in native.json() and "error" not in native.json()


async def test_an_endpoint_being_deleted_is_404_model_not_found(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("going", [tgi.url])
    async with gateway.client() as client:
        assert (await client.delete("/v1/llm/model-endpoints/going", headers=BEARER)).status_code == 200
    error = assert_error(await post(gateway, CHAT, {"model": "going", "messages": MESSAGES}), 404, param="model")
    assert error["code"] == "model_not_found" and "being deleted" in error["message"]
    async with gateway.client() as client:
        listing = (await client.get("/v1/models", headers=BEARER)).json()
        card = await client.get("/v1/models/going", headers=BEARER)
    assert listing["data"] == []
    assert assert_error(card, 404, param="model")["code"] == "model_not_found"
