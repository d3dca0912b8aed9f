"""One real inference server (the bundled SmolLM2 model on CPU) for the whole test session, driven over HTTP.

Its limits are small on purpose: 4 concurrent requests (so overload is easy to provoke) and short contexts (so the
over-long-input checks need only a few hundred tokens).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from model_engine_server.testing.platform import BuiltinServer, running_builtin_server

MAX_CONCURRENT_REQUESTS = 4
MAX_INPUT_TOKENS = 256
MAX_TOTAL_TOKENS = 512
START_TIMEOUT_SECONDS = 240  # the first run converts the GGUF file (about half a minute, more on a busy machine)


RunningServer = BuiltinServer  # the name these tests know it by


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltinServer]:
    log = tmp_path_factory.mktemp("inference-server") / "server.log"
    limits = ["--max-concurrent-requests", str(MAX_CONCURRENT_REQUESTS), "--max-input-tokens", str(MAX_INPUT_TOKENS)]
    with running_builtin_server(log, *limits, "--max-total-tokens", str(MAX_TOTAL_TOKENS)) as running:
        running.wait_healthy(START_TIMEOUT_SECONDS)
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
