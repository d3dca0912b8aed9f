"""An async completion on the real bundled model (SmolLM2-135M, served by the built-in inference server)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_engine_server.config import Settings
from model_engine_server.db.repositories import EndpointRegistry
from testkit import free_port
from tests.tasks.conftest import Workers, announce_replicas, ready_endpoint
from tests.tasks.helpers import submit, wait_for_status

pytestmark = pytest.mark.model


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    command = [sys.executable, "-m", "model_engine_server.inference.server", "--model-id", "smollm2-135m"]
    command += ["--port", str(port), "--hostname", "127.0.0.1", "--num-threads", "1"]
    with (tmp_path / "model-server.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    try:
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_healthy(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "the inference server exited"
            try:
                if (await client.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"the inference server was not healthy after {timeout}s")


@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
async def test_async_completion_on_the_bundled_model(
    gateway_client: httpx.AsyncClient,
    registry: EndpointRegistry,
    task_settings: Settings,
    workers: Workers,
    model_server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, process = model_server
    endpoint = await ready_endpoint(registry, "smollm2")
    announce_replicas(task_settings, [(endpoint, [port])])
    workers.start()
    # Submitted while the model is still loading: the worker retries until the server accepts connections.
    task_id = await submit(gateway_client, "smollm2", prompt="The capital of France is", max_new_tokens=8)
    await _wait_healthy(port, process, 300)
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
