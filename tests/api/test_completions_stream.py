"""``POST /v1/llm/completions-stream``: Server-Sent Events through the real gateway on a socket, against real TGI-
and OpenAI-protocol servers on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import (
    ALICE,
    RunningGateway,
    loopback_settings,
    read_events,
    running_fake_openai,
    serving_llm,
    wait_until,
)

STREAM = "/v1/llm/completions-stream"
SYNC = "/v1/llm/completions-sync"
PARAMS = {"model_endpoint_name": "llm"}


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return loopback_settings(sqlite_url, tmp_path)


async def stream_events(gateway: RunningGateway, body: dict[str, Any]) -> tuple[httpx.Response, list[dict[str, Any]]]:
    async with gateway.client() as client, client.stream("POST", STREAM, params=PARAMS, json=body, auth=ALICE) as r:
        return r, await read_events(r)


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [event["output"]["text"] for event in events]


async def test_tgi_stream_is_token_by_token_and_ends_with_the_counts(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"prompt": "once upon a time", "max_new_tokens": 5, "temperature": 0.2, "return_token_log_probs": True}
    response, events = await stream_events(gateway, body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert texts(events) == [" the", " quick", " brown", " fox", " jumps"]
    assert len({event["request_id"] for event in events}) == 1
    assert all(event["error"] is None for event in events)
    assert [event["output"]["finished"] for event in events] == [False] * 4 + [True]
    assert events[0]["output"] == {"text": " the", "finished": False, "token": {"token": " the", "log_prob": -0.25}}
    assert events[-1]["output"]["num_prompt_tokens"] == 4
    assert events[-1]["output"]["num_completion_tokens"] == 5
    # The engine was asked to stream the same mapped parameters a sync call sends (minus prefill details).
    assert tgi.requests[0] == (
        "/generate_stream",
        {
            "inputs": "once upon a time",
            "parameters": {"max_new_tokens": 5, "details": True, "do_sample": True, "temperature": 0.2},
        },
    )


async def test_stream_and_sync_produce_the_same_text(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    tgi.eos_after = 3  # an end-of-sequence special token: counted, but no text
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"prompt": "x", "max_new_tokens": 10, "temperature": 0.2, "stop_sequences": ["zzz"]}
    _, events = await stream_events(gateway, body)
    async with gateway.client() as client:
        sync = (await client.post(SYNC, params=PARAMS, json=body, auth=ALICE)).json()["output"]
    assert "".join(texts(events)) == sync["text"] == " the quick brown"
    assert events[-1]["output"]["num_completion_tokens"] == sync["num_completion_tokens"] == 4


async def test_first_event_arrives_while_the_engine_is_still_generating(gateway: RunningGateway) -> None:
    async with running_instant_tgi(token_delay=0.05) as slow:
        await gateway.add_endpoint("llm", [slow.url])
        body = {"prompt": "x", "max_new_tokens": 100, "temperature": 0.2}
        async with gateway.client() as client, client.stream("POST", STREAM, params=PARAMS, json=body, auth=ALICE) as r:
            lines = r.aiter_lines()
            first = await anext(line async for line in lines if line.startswith("data:"))
            assert orjson.loads(first[5:])["output"]["text"] == " the"
            assert slow.in_flight == 1 and slow.served == 0  # nothing was buffered until the end


async def test_vllm_stream_maps_chunks_usage_and_log_probs(gateway: RunningGateway) -> None:
    async with running_fake_openai() as openai:
        await gateway.add_endpoint("llm", [openai.url], framework="vllm")
        body = {
            "prompt": "a b",
            "max_new_tokens": 8,
            "temperature": 0.2,
            "stop_sequences": ["brown"],
            "return_token_log_probs": True,
        }
        response, events = await stream_events(gateway, body)

    assert response.status_code == 200
    assert openai.requests[0]["stream"] is True
    assert openai.requests[0]["stream_options"] == {"include_usage": True}
    assert texts(events) == [" the", " quick", " brown", ""]
    assert [event["output"].get("token") for event in events[:3]] == [
        {"token": " the", "log_prob": -0.25},
        {"token": " quick", "log_prob": -0.5},
        {"token": " brown", "log_prob": -0.75},
    ]
    assert events[-1]["output"] == {"text": "", "finished": True, "num_prompt_tokens": 2, "num_completion_tokens": 3}


async def test_quiet_stream_sends_keepalive_comments(gateway: RunningGateway) -> None:
    async with running_instant_tgi(token_delay=0.3) as slow:
        await gateway.add_endpoint("llm", [slow.url])
        body = {"prompt": "x", "max_new_tokens": 3, "temperature": 0.2}
        async with gateway.client() as client, client.stream("POST", STREAM, params=PARAMS, json=body, auth=ALICE) as r:
            lines = [line async for line in r.aiter_lines()]
    assert ": ping" in lines
    assert [orjson.loads(line[5:])["output"]["text"] for line in lines if line.startswith("data:")] == [
        " the",
        " quick",
        " brown",
    ]


@pytest.mark.parametrize("framework", ["text_generation_inference", "vllm"])
async def test_mid_stream_engine_failure_becomes_one_in_band_error_event(
    gateway: RunningGateway, framework: str
) -> None:
    async with serving_llm(gateway, framework, fail_after=2):
        response, events = await stream_events(gateway, {"prompt": "x", "max_new_tokens": 6, "temperature": 0.2})

    assert response.status_code == 200
    assert texts(events[:2]) == [" the", " quick"]
    error_event = events[2]
    assert len(events) == 3
    assert error_event["request_id"] == events[0]["request_id"]
    assert error_event["output"] is None
    assert error_event["error"]["status_code"] == 502
    assert "failed mid-stream" in error_event["error"]["content"]["error"]
    assert error_event["error"]["content"]["timestamp"]


@pytest.mark.parametrize("framework", ["text_generation_inference", "vllm"])
async def test_client_disconnect_cancels_the_upstream_generation(gateway: RunningGateway, framework: str) -> None:
    async with serving_llm(gateway, framework, token_delay=0.05) as upstream:
        body = {"prompt": "x", "max_new_tokens": 400, "temperature": 0.2}
        async with gateway.client() as client, client.stream("POST", STREAM, params=PARAMS, json=body, auth=ALICE) as r:
            first = await anext(line async for line in r.aiter_lines() if line.startswith("data:"))
            assert orjson.loads(first[5:])["output"]["finished"] is False
        # The client went away after one token; the engine must hear about it long before its 20 s of output.
        await wait_until(lambda: upstream.cancelled == 1)
        upstream_client = gateway.app.state.completions.upstream
        await wait_until(lambda: upstream_client.in_flight(upstream.url) == 0)


async def test_errors_before_the_first_event_are_plain_http_errors(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url], status=EndpointStatus.UPDATE_IN_PROGRESS)
    body = {"prompt": "x", "max_new_tokens": 3, "temperature": 0.2}
    async with gateway.client() as client:
        not_ready = await client.post(STREAM, params=PARAMS, json=body, auth=ALICE)
        unknown = await client.post(STREAM, params={"model_endpoint_name": "nope"}, json=body, auth=ALICE)
        bad = await client.post(STREAM, params=PARAMS, json={**body, "temperature": 2}, auth=ALICE)
    assert not_ready.status_code == 503
    assert "not ready" in not_ready.json()["detail"]
    assert unknown.status_code == 404
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("temperature:")
    assert tgi.requests == []


async def test_engine_refusal_before_the_first_token_is_an_http_error(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    tgi.max_total_tokens = 5
    await gateway.add_endpoint("llm", [tgi.url])
    async with gateway.client() as client:
        response = await client.post(
            STREAM, params=PARAMS, json={"prompt": "a b", "max_new_tokens": 10, "temperature": 0.2}, auth=ALICE
        )
    assert response.status_code == 400
    assert "must be <= 5" in response.json()["detail"]


async def test_stream_metrics_record_time_to_first_token(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])

    async def ttft_count() -> float:
        async with gateway.client() as client:
            text = (await client.get("/metrics")).text
        line = next(
            line
            for line in text.splitlines()
            if line.startswith('llm_engine_completion_time_to_first_token_seconds_count{protocol="native"}')
        )
        return float(line.split()[-1])

    before = await ttft_count()
    await stream_events(gateway, {"prompt": "x", "max_new_tokens": 2, "temperature": 0.2})
    assert await ttft_count() == before + 1


async def test_single_token_stream_is_one_finished_event(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    response, events = await stream_events(gateway, {"prompt": "a b c", "max_new_tokens": 1, "temperature": 0})
    assert response.status_code == 200
    assert [event["output"] for event in events] == [
        {"text": " the", "finished": True, "num_prompt_tokens": 3, "num_completion_tokens": 1}
    ]
    upstream_client = gateway.app.state.completions.upstream
    await wait_until(lambda: upstream_client.in_flight(tgi.url) == 0)
