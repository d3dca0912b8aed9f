"""One machine's platform as separate processes — ``model-engine orchestrator`` (reconciler and local orchestrator),
``model-engine gateway`` and ``model-engine worker`` — so a test can restart the gateway alone. Instant TGI-protocol
servers stand in for the model (scaling is not about the model); endpoints sleep after two idle seconds."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.state import StateFile
from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import inference_servers
from tests.processes import MODEL_ENGINE, EngineProcess, engine_env, free_port, migrate, poll_until

IDLE_SECONDS = 2.0
TOKEN_DELAY = 0.05  # streamed tokens arrive 50 ms apart, so streams are in flight long enough to be counted
OWNER = ("scaling", "")
SETTINGS = {
    "inference_server_command": f"{sys.executable} -m model_engine_server.testing.tgi --token-delay {TOKEN_DELAY}",
    "scale_to_zero_idle_seconds": str(IDLE_SECONDS),
    "reconcile_interval_seconds": "0.2",
    "autoscale_scale_up_window_seconds": "1",
    "autoscale_scale_down_window_seconds": "2",
    "demo_model": "",
    # Few task threads, so a test can tell whether tasks for a waking endpoint hold them (they must not).
    "async_worker_concurrency": "2",
}


@dataclass
class LocalPlatform:
    data_dir: Path
    orchestrator: EngineProcess
    gateway: EngineProcess
    worker: EngineProcess

    def client(self, timeout: float = 30) -> httpx.Client:
        return httpx.Client(base_url=self.gateway.url, auth=OWNER, timeout=timeout)

    def endpoint(self, name: str) -> dict[str, Any]:
        with self.client() as client:
            answer = client.get(f"/v1/llm/model-endpoints/{name}")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

    def workers(self, name: str) -> tuple[str, int, str | None]:
        endpoint = self.endpoint(name)
        return (
            endpoint["status"],
            endpoint["spec"]["deployment_state"]["available_workers"],
            endpoint["spec"]["status_reason"],
        )

    def create(self, name: str, **config: Any) -> None:
        body = {"name": name, "model_name": "smollm2-135m", "min_workers": 0, "max_workers": 1, **config}
        with self.client() as client:
            created = client.post("/v1/llm/model-endpoints", json=body)
            assert created.status_code == 200, created.text

    def wait_asleep(self, name: str, timeout: float = 30) -> None:
        def asleep() -> bool:
            status, available, reason = self.workers(name)
            return status == "READY" and available == 0 and "idle" in (reason or "").lower()

        poll_until(asleep, timeout, f"endpoint {name} idle at zero workers")
        poll_until(lambda: not self.servers(name), timeout, f"the servers of {name} stopped")

    def servers(self, name: str) -> set[int]:
        """Pids of the endpoint's inference server processes (starting, serving or draining)."""
        return inference_servers(self.data_dir, "model_engine_server.testing.tgi", name)

    def starts(self, name: str) -> int:
        """Inference servers started for the endpoint so far (one banner line per start in its replica logs)."""
        logs = (self.data_dir / "logs" / "endpoints" / name).glob("replica-*.log")
        return sum(len(re.findall(r"^===== ", log.read_text(errors="replace"), re.M)) for log in logs)

    def ready_servers(self, name: str) -> list[int]:
        """Pids of the endpoint's ready replicas, as the orchestrator records them for the gateways."""
        records = StateFile(state_file_path(self.data_dir)).load()
        return [r.pid for d in records if d.name == name for r in d.replicas if r.ready]

    def peer(self, script: str) -> dict[str, Any]:
        """Run ``script`` with the published ``scale-llm-engine`` client on this gateway; it prints one JSON line."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the published client, not ours
        env.update(
            {
                "LLM_ENGINE_BASE_PATH": self.gateway.url + "/",
                "SCALE_API_KEY": OWNER[0],
                "LLM_ENGINE_DISABLE_VERSION_CHECK": "true",
            }
        )
        done = run_peer_script(script, env)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _process(data_dir: Path, env: dict[str, str], *command: str, url: str = "") -> EngineProcess:
    return EngineProcess([MODEL_ENGINE, *command], env, data_dir / f"{command[0]}.log", url=url)


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    data_dir = tmp_path_factory.mktemp("scaling")
    env = engine_env(data_dir, **SETTINGS)
    migrate(env)
    port = free_port()
    gateway = _process(
        data_dir, env, "gateway", "--host", "127.0.0.1", "--port", str(port), url=f"http://127.0.0.1:{port}"
    )
    running = LocalPlatform(
        data_dir, _process(data_dir, env, "orchestrator"), gateway, _process(data_dir, env, "worker")
    )
    running.orchestrator.start(ready_path=None)
    running.worker.start(ready_path=None)
    try:
        gateway.start()
        yield running
    finally:
        for process in (running.gateway, running.worker, running.orchestrator):
            process.stop()
