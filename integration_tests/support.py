"""Starting, stopping and inspecting the platform under test (used by conftest.py and the tests)."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from llmengine import Model
from llmengine.data_types import GetLLMEndpointResponse, LLMInferenceFramework, ModelEndpointStatus

from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.state import ReplicaRecord, StateFile
from testkit import eventually
from testkit import platform as testkit_platform

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
STARTUP_TIMEOUT = 180.0  # first run converts the GGUF file (about half a minute on two cores)
READY_TIMEOUT = 240.0


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


def start_platform(workdir: Path) -> Platform:
    """``model-engine serve`` with the embedded defaults in ``workdir``, through the test kit's launcher."""
    cache = os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or str(REPO_ROOT / ".llm-engine" / "test-model-cache")
    running = testkit_platform.start_platform(
        "serve",
        workdir / "data",
        migrate=False,  # serve migrates by itself
        timeout=STARTUP_TIMEOUT,
        model_cache_dir=cache,
        auth_mode="open",
        reconcile_interval_seconds="1",
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


def create_ready_endpoint(name: str, framework: LLMInferenceFramework, platform: Platform, **options: Any) -> None:
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
    ready = wait_for_status(name, {ModelEndpointStatus.READY, ModelEndpointStatus.UPDATE_FAILED}, platform)
    assert ready.status is ModelEndpointStatus.READY, ready.spec.status_reason if ready.spec else ready
