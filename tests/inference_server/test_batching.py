"""Continuous batching seen from outside: batched answers equal solo answers, limits hold, disconnects free slots."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from contextlib import ExitStack

import httpx
import pytest

from model_engine_server.testing import eventually
from tests.inference_server.conftest import MAX_CONCURRENT_REQUESTS, RunningServer

pytestmark = pytest.mark.model

# Different lengths (so rows are padded differently) and different max_new_tokens (so rows retire at different steps).
REQUESTS = [
    ("The capital of France is", 10),
    ("def fibonacci(n):", 14),
    ("Once upon a time, in a land far away, there lived a", 6),
    ("List three colours:", 12),
]
# Greedy decoding counts on and on from here, so requests with it run to max_new_tokens instead of stopping at EOS.
ENDLESS_PROMPT = "1, 2, 3, 4, 5, 6, 7, 8,"


def metric(client: httpx.Client, name: str) -> float:
    pattern = re.compile(rf"^{re.escape(name)} (\S+)$", re.MULTILINE)
    match = pattern.search(client.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    eventually(condition, timeout=timeout, interval=0.1)


async def test_concurrent_requests_get_the_same_greedy_text_as_alone(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

        async def run(prompt: str, tokens: int, delay: float = 0.0) -> str:
            await asyncio.sleep(delay)  # staggered arrivals join a batch that is already decoding
            body = {"inputs": prompt, "parameters": {"max_new_tokens": tokens}}
            response = await client.post("/generate", json=body)
            assert response.status_code == 200
            text: str = response.json()["generated_text"]
            return text

        alone = [await run(prompt, tokens) for prompt, tokens in REQUESTS]
        together = await asyncio.gather(*(run(p, t, delay=0.05 * i) for i, (p, t) in enumerate(REQUESTS)))

    assert list(together) == alone


def test_requests_past_the_limit_are_refused_with_429(server: RunningServer, client: httpx.Client) -> None:
    body = {"inputs": ENDLESS_PROMPT, "parameters": {"max_new_tokens": 400}}
    small = {"inputs": "Hi", "parameters": {"max_new_tokens": 2}}
    with ExitStack() as streams:
        # Keep each line iterator alive: dropping one makes httpx close its connection, which cancels the request.
        readers = []
        for _ in range(MAX_CONCURRENT_REQUESTS):
            response = streams.enter_context(client.stream("POST", "/generate_stream", json=body))
            readers.append(response.iter_lines())
            next(readers[-1])  # the first token: this request is now in flight

        refused = client.post("/generate", json=small)
        with client.stream("POST", "/generate_stream", json=small) as over:
            in_band = [line for line in over.iter_lines() if line.startswith("data:")]

    assert refused.status_code == 429
    assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
    assert in_band == ['data:{"error":"Model is overloaded","error_type":"overloaded"}']
    # Closing the streams gave the slots back.
    wait_for(lambda: client.post("/generate", json=small).status_code == 200)


def test_client_disconnect_removes_the_sequence_from_the_batch(client: httpx.Client) -> None:
    cancelled_before = metric(client, 'tgi_request_failure_total{err="cancelled"}')
    body = {"inputs": ENDLESS_PROMPT, "parameters": {"max_new_tokens": 450}}

    with client.stream("POST", "/generate_stream", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        next(lines)
        assert metric(client, "tgi_batch_current_size") == 1

    # 450 tokens would take many seconds; the sequence must leave the batch at the next step instead.
    wait_for(lambda: metric(client, "tgi_batch_current_size") == 0)
    assert metric(client, 'tgi_request_failure_total{err="cancelled"}') == cancelled_before + 1


def test_abandoned_non_streaming_request_is_cancelled(server: RunningServer, client: httpx.Client) -> None:
    cancelled_before = metric(client, 'tgi_request_failure_total{err="cancelled"}')
    body = {"inputs": ENDLESS_PROMPT, "parameters": {"max_new_tokens": 450}}

    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(60, read=1.0)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/generate", json=body)  # gives up and closes the connection after a second

    # Long before 450 tokens could be done. Polled on the counter, not the batch size: on a busy machine the request
    # may still be waiting for its prefill when the client gives up, and an empty batch would prove nothing yet.
    wait_for(lambda: metric(client, 'tgi_request_failure_total{err="cancelled"}') == cancelled_before + 1)
    wait_for(lambda: metric(client, "tgi_batch_current_size") == 0)
