"""One real inference server (the bundled SmolLM2 model on CPU) for the whole test session, driven over HTTP.

Its limits are small on purpose: 4 concurrent requests (so overload is easy to provoke) and short contexts (so the
over-long-input checks need only a few hundred tokens).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit import free_port
from testkit.platform import builtin_server_command, stop_process, wait_healthy

MAX_CONCURRENT_REQUESTS = 4
MAX_INPUT_TOKENS = 256
MAX_TOTAL_TOKENS = 512
START_TIMEOUT_SECONDS = 240  # the first run converts the GGUF file (about half a minute, more on a busy machine)


@dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    log = tmp_path_factory.mktemp("inference-server") / "server.log"
    command = builtin_server_command(
        "smollm2-135m",
        port,
        "--max-concurrent-requests",
        str(MAX_CONCURRENT_REQUESTS),
        "--max-input-tokens",
        str(MAX_INPUT_TOKENS),
        "--max-total-tokens",
        str(MAX_TOTAL_TOKENS),
    )
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/health", process, timeout=START_TIMEOUT_SECONDS, output=lambda: log.read_text()[-3000:])
        yield RunningServer(url, process, log)
    finally:
        stop_process(process, timeout=30)


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
