"""The local orchestrator with the real built-in inference server and the bundled model (marked ``model``: slow)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.orchestration.local import LocalOrchestrator, SupervisionPolicy
from model_engine_server.orchestration.local.launch import BUILTIN_SERVER_MODULE
from tests.orchestration.helpers import eventually, make_endpoint

pytestmark = [pytest.mark.model, pytest.mark.timeout(400)]

REPO_ROOT = Path(__file__).resolve().parents[2]
# Converted weights are reused across runs (the first conversion takes about half a minute).
MODEL_CACHE = Path(os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or REPO_ROOT / ".llm-engine" / "test-model-cache")


@pytest.fixture
async def builtin(tmp_path: Path) -> AsyncIterator[LocalOrchestrator]:
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=MODEL_CACHE)
    # One crash is a verdict here: the real server fails the same way every time, and each start costs seconds.
    local = LocalOrchestrator(settings, SupervisionPolicy(health_interval_seconds=0.25, crash_loop_after=1))
    await local.start()
    yield local
    await local.close()


async def test_the_builtin_server_serves_the_bundled_model(builtin: LocalOrchestrator) -> None:
    endpoint = make_endpoint("smol", None)  # model_name smollm2-135m: the zoo's bundled GGUF
    await builtin.apply(endpoint)
    [replica] = builtin.replicas(endpoint.id)
    assert BUILTIN_SERVER_MODULE in replica.log_path.read_text()  # no text-generation-launcher here

    state = await eventually(
        lambda: builtin.observe(endpoint), lambda s: s.status is not EndpointStatus.UPDATE_IN_PROGRESS, timeout=300
    )
    assert state.status is EndpointStatus.READY, state.reason
    [url] = await builtin.upstreams(endpoint)
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        answer = await client.post(
            "/generate", json={"inputs": "Once upon a time", "parameters": {"max_new_tokens": 5}}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["generated_text"]


async def test_a_model_the_server_cannot_load_fails_with_its_message(
    builtin: LocalOrchestrator, tmp_path: Path
) -> None:
    endpoint = make_endpoint("missing", tmp_path / "no-such-checkpoint")
    await builtin.apply(endpoint)
    state = await eventually(
        lambda: builtin.observe(endpoint), lambda s: s.status is EndpointStatus.UPDATE_FAILED, timeout=120
    )
    assert state.reason is not None
    assert "no-such-checkpoint" in state.reason and "was not found" in state.reason
    assert "replica-0.log" in state.reason
