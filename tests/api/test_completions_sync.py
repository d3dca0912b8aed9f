"""``POST /v1/llm/completions-sync`` through the real gateway on a socket, against real TGI- and OpenAI-protocol
servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.config import AuthMode, Settings
from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.testing import free_port
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import (
    ALICE,
    BOB,
    FakeOpenAiServer,
    RunningGateway,
    running_fake_openai,
)

SYNC = "/v1/llm/completions-sync"
STREAM = "/v1/llm/completions-stream"


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    # SQLite only: here the registry is just where the endpoint lives; its queries are tested on both databases.
    return Settings(database_url=sqlite_url, data_dir=tmp_path / "data", auth_mode=AuthMode.OPEN)


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAiServer]:
    async with running_fake_openai() as server:
        yield server


async def post(gateway: RunningGateway, body: dict[str, Any], name: str = "llm", auth: Any = ALICE) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(SYNC, params={"model_endpoint_name": name}, json=body, auth=auth)


async def test_tgi_maps_every_sampling_field_and_returns_tokens_and_counts(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {
        "prompt": "tell me a story",
        "max_new_tokens": 20,
        "temperature": 0.5,
        "stop_sequences": ["lazy"],
        "return_token_log_probs": True,
        "top_k": 5,
        "top_p": 0.9,
        "frequency_penalty": 0.3,
    }
    response = await post(gateway, body)

    assert response.status_code == 200, response.text
    assert tgi.requests == [
        (
            "/generate",
            {
                "inputs": "tell me a story",
                "parameters": {
                    "max_new_tokens": 20,
                    "details": True,
                    "decoder_input_details": True,
                    "do_sample": True,
                    "temperature": 0.5,
                    "top_k": 5,
                    "top_p": 0.9,
                    "stop": ["lazy"],
                    "frequency_penalty": 0.3,
                },
            },
        )
    ]
    result = response.json()
    assert result["request_id"]
    output = result["output"]
    assert output["text"] == " the quick brown fox jumps over a lazy"  # stopped at the stop sequence, kept in text
    assert output["num_prompt_tokens"] == 4
    assert output["num_completion_tokens"] == 8
    assert [t["token"] for t in output["tokens"]] == [
        " the",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " a",
        " lazy",
    ]
    assert [t["log_prob"] for t in output["tokens"][:5]] == [-0.25, -0.5, -0.75, -1.0, -0.25]


async def test_greedy_request_leaves_sampling_off_and_omits_tokens(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    # What the published client sends: every optional field, null when unset.
    body = {
        "prompt": "hi",
        "max_new_tokens": 3,
        "temperature": 0,
        "stop_sequences": None,
        "return_token_log_probs": False,
        "top_k": 10,
        "top_p": 1.0,
        "presence_penalty": None,
        "frequency_penalty": None,
        "include_stop_str_in_output": None,
        "guided_json": None,
    }
    response = await post(gateway, body)

    assert response.status_code == 200, response.text
    parameters = tgi.requests[0][1]["parameters"]
    assert parameters == {"max_new_tokens": 3, "details": True, "decoder_input_details": True, "do_sample": False}
    assert response.json()["output"] == {"text": " the quick brown", "num_prompt_tokens": 1, "num_completion_tokens": 3}


async def test_vllm_maps_every_field_and_keeps_the_stop_sequence(
    gateway: RunningGateway, openai: FakeOpenAiServer
) -> None:
    await gateway.add_endpoint("llm", [openai.url], framework="vllm")
    body = {
        "prompt": "tell me a story",
        "max_new_tokens": 20,
        "temperature": 0.7,
        "stop_sequences": ["fox"],
        "return_token_log_probs": True,
        "top_k": 5,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
    }
    response = await post(gateway, body)

    assert response.status_code == 200, response.text
    assert openai.requests == [
        {
            "prompt": "tell me a story",
            "max_tokens": 20,
            "temperature": 0.7,
            "n": 1,
            "include_stop_str_in_output": True,
            "top_k": 5,
            "top_p": 0.9,
            "stop": ["fox"],
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "logprobs": 0,
        }
    ]
    output = response.json()["output"]
    assert output["text"] == " the quick brown fox"
    assert output["num_prompt_tokens"] == 4
    assert output["num_completion_tokens"] == 4
    assert output["tokens"] == [
        {"token": " the", "log_prob": -0.25},
        {"token": " quick", "log_prob": -0.5},
        {"token": " brown", "log_prob": -0.75},
        {"token": " fox", "log_prob": -1.0},
    ]


async def test_vllm_greedy_sends_temperature_zero_without_sampling_fields(
    gateway: RunningGateway, openai: FakeOpenAiServer
) -> None:
    await gateway.add_endpoint("llm", [openai.url], framework="vllm")
    response = await post(gateway, {"prompt": "hi", "max_new_tokens": 2, "temperature": 0, "top_k": 3, "top_p": 0.5})
    assert response.status_code == 200, response.text
    assert openai.requests[0] == {
        "prompt": "hi",
        "max_tokens": 2,
        "temperature": 0.0,
        "n": 1,
        "include_stop_str_in_output": True,
    }
    assert "tokens" not in response.json()["output"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "", "max_new_tokens": 5, "temperature": 0.1}, 400, "prompt: String should have at least 1"),
        ({"prompt": "x", "max_new_tokens": 5, "temperature": 1.5}, 400, "temperature: Input should be less"),
        ({"prompt": "x", "max_new_tokens": 5, "temperature": -0.1}, 400, "temperature: Input should be greater"),
        ({"prompt": "x", "max_new_tokens": 0, "temperature": 0.1}, 400, "max_new_tokens: Input should be"),
        ({"prompt": "x", "max_new_tokens": 5000, "temperature": 0.1}, 400, "context length"),
        ({"prompt": "word " * 2040, "max_new_tokens": 10, "temperature": 0.1}, 400, "prompt is too long"),
        ({"prompt": "x", "temperature": 0.1}, 400, "max_new_tokens: Field required"),
        ({"prompt": "x", "max_new_tokens": 5, "temperature": 0.1, "top_p": 0}, 400, "top_p: Input should be"),
        ({"prompt": "x", "max_new_tokens": 5, "temperature": 0.1, "presence_penalty": 0.5}, 400, "presence_penalty"),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_never_reaches_the_engine(
    gateway: RunningGateway, tgi: InstantTgiServer, body: dict[str, Any], status: int, message: str
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    response = await post(gateway, body)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])
    assert tgi.requests == []


async def test_engine_validation_error_becomes_400_with_the_engines_message(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    tgi.max_total_tokens = 10
    await gateway.add_endpoint("llm", [tgi.url])
    response = await post(gateway, {"prompt": "a b c", "max_new_tokens": 9, "temperature": 0.1})
    assert response.status_code == 400
    assert "must be <= 10" in response.json()["detail"]


async def test_engine_overload_becomes_429(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    tgi.max_concurrent = 0
    await gateway.add_endpoint("llm", [tgi.url])
    response = await post(gateway, {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1})
    assert response.status_code == 429
    assert "overloaded" in response.json()["detail"]


async def test_unknown_endpoint_and_someone_elses_private_endpoint_are_404(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1}
    unknown = await post(gateway, body, name="nope")
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["detail"]
    not_visible = await post(gateway, body, auth=BOB)
    assert not_visible.status_code == 404
    assert tgi.requests == []


async def test_public_endpoint_serves_other_callers(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url], public_inference=True)
    response = await post(gateway, {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1}, auth=BOB)
    assert response.status_code == 200, response.text
    assert response.json()["output"]["text"] == " the quick"


async def test_not_ready_endpoint_is_503_with_the_reason(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url], status=EndpointStatus.UPDATE_FAILED, reason="image pull error")
    response = await post(gateway, {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1})
    assert response.status_code == 503
    assert "UPDATE_FAILED" in response.json()["detail"]
    assert "image pull error" in response.json()["detail"]


async def test_ready_endpoint_without_replicas_is_503(gateway: RunningGateway) -> None:
    await gateway.add_endpoint("llm", [])
    response = await post(gateway, {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1})
    assert response.status_code == 503
    assert "no ready replica" in response.json()["detail"]


async def test_refused_replica_is_skipped_and_all_refused_is_503(
    gateway: RunningGateway, tgi: InstantTgiServer, unused_port: int
) -> None:
    dead = f"http://127.0.0.1:{unused_port}"
    await gateway.add_endpoint("llm", [dead, tgi.url])
    await gateway.add_endpoint("dead", [dead])
    body = {"prompt": "x", "max_new_tokens": 2, "temperature": 0.1}
    for _ in range(4):  # whichever replica the rotation tries first, the live one answers
        assert (await post(gateway, body)).status_code == 200
    refused = await post(gateway, body, name="dead")
    assert refused.status_code == 503
    assert "accepted a connection" in refused.json()["detail"]


async def test_requests_go_to_the_replica_with_fewest_in_flight(gateway: RunningGateway) -> None:
    async with (
        running_instant_tgi(token_delay=0.05, record=True) as first,
        running_instant_tgi(token_delay=0.05, record=True) as second,
    ):
        await gateway.add_endpoint("llm", [first.url, second.url])
        body = {"prompt": "x", "max_new_tokens": 200, "temperature": 0.1}
        params = {"model_endpoint_name": "llm"}
        async with gateway.client() as client, client.stream("POST", STREAM, params=params, json=body, auth=ALICE) as s:
            assert s.status_code == 200
            streaming, other = (first, second) if first.in_flight else (second, first)
            assert streaming.in_flight == 1
            for _ in range(6):
                response = await client.post(SYNC, params=params, json={**body, "max_new_tokens": 2}, auth=ALICE)
                assert response.status_code == 200
            # Every sync request avoided the replica busy with the stream.
            assert [path for path, _ in streaming.requests] == ["/generate_stream"]
            assert [path for path, _ in other.requests] == ["/generate"] * 6


@pytest.fixture
def unused_port() -> int:
    return free_port()


async def test_a_deleted_endpoint_is_404_at_once_even_while_its_lookup_is_cached(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"prompt": "hi", "max_new_tokens": 2, "temperature": 0}
    assert (await post(gateway, body)).status_code == 200  # the endpoint's lookup is cached now
    registry = gateway.app.state.services.endpoints
    endpoint = await registry.get_owned("llm", ALICE[0])
    gateway.resolver.routes.pop("llm")  # the reconciler stopped its servers ...
    await registry.remove(endpoint.id)  # ... and removed the record

    response = await post(gateway, body)
    assert response.status_code == 404, response.text
    assert "was not found" in response.json()["detail"]
