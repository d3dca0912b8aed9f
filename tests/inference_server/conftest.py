"""One real inference server (the bundled SmolLM2 model on CPU) for the whole test session, driven over HTTP.

Its limits are small on purpose: 4 concurrent requests (so overload is easy to provoke) and short contexts (so the
over-long-input checks need only a few hundred tokens).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit import free_port

MAX_CONCURRENT_REQUESTS = 4
MAX_INPUT_TOKENS = 256
MAX_TOTAL_TOKENS = 512
START_TIMEOUT_SECONDS = 240  # the first run converts the GGUF file (about half a minute, more on a busy machine)


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the inference server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the inference server was not healthy within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("inference-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "model_engine_server.inference.server",
        "--model-id",
        "smollm2-135m",
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-concurrent-requests",
        str(MAX_CONCURRENT_REQUESTS),
        "--max-input-tokens",
        str(MAX_INPUT_TOKENS),
        "--max-total-tokens",
        str(MAX_TOTAL_TOKENS),
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log, START_TIMEOUT_SECONDS)
        yield RunningServer(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
