"""One real inference server (the bundled SmolLM2 model on CPU) for the whole test session, driven over HTTP.

Its limits are small on purpose: 4 concurrent requests (so overload is easy to provoke) and short contexts (so the
over-long-input checks need only a few hundred tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from model_engine_server.testing.platform import BuiltinServer, running_builtin_server

if TYPE_CHECKING:
    from model_engine_server.inference.server.engine import ModelRunner

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


@pytest.fixture(scope="session")
def model_runner() -> Iterator[ModelRunner]:
    """The bundled model loaded in this process once (float32, CPU), for tests of the forward pass itself.

    It computes on one torch thread: these tests check values, and on a busy shared machine two OpenMP threads wait
    on each other at every operation (measured: 13x slower than one thread at load average 7).
    """
    import torch

    from model_engine_server.config import Settings
    from model_engine_server.inference.model_loading import resolve_model
    from model_engine_server.inference.server.engine import ModelRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield ModelRunner.load(resolve_model("smollm2-135m", Settings().models_dir), dtype="float32", device="cpu")
    finally:
        torch.set_num_threads(threads)
