"""An async completion on the real bundled model (SmolLM2-135M, served by the built-in inference server)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_engine_server.config import Settings
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.testing.platform import BuiltinServer, running_builtin_server
from tests.tasks.conftest import Workers, served_endpoint
from tests.tasks.helpers import submit, wait_for_status

pytestmark = pytest.mark.model


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[BuiltinServer]:
    with running_builtin_server(tmp_path / "model-server.log", threads=1) as running:
        yield running


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
async def test_async_completion_on_the_bundled_model(
    gateway_client: httpx.AsyncClient,
    registry: EndpointRegistry,
    task_settings: Settings,
    workers: Workers,
    model_server: BuiltinServer,
) -> None:
    port = model_server.port
    await served_endpoint(registry, task_settings, "smollm2", port)
    workers.start()
    # Submitted while the model is still loading: the worker retries until the server accepts connections.
    task_id = await submit(gateway_client, "smollm2", prompt="The capital of France is", max_new_tokens=8)
    await asyncio.to_thread(model_server.wait_healthy)
    state = await wait_for_status(gateway_client, task_id, timeout=300)
    assert state["status"] == "SUCCESS", workers.logs()
    # Greedy decoding: the same text the model server gives for the same request directly.
    async with httpx.AsyncClient(timeout=120) as client:
        direct = await client.post(
            f"http://127.0.0.1:{port}/generate",
            json={"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8, "do_sample": False}},
        )
    output = state["result"]["output"]
    assert output["text"] == direct.json()["generated_text"]
    assert output["text"].strip()
    assert 1 <= output["num_completion_tokens"] <= 8  # end-of-sequence may stop it early
    assert output["num_prompt_tokens"] >= 5
