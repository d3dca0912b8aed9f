"""``model-engine serve`` as a user runs it (a subprocess on a free port), for end-to-end job tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from model_engine_server.orchestration.local.processes import free_port
from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import stop_process, wait_healthy

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = Path(os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or REPO_ROOT / ".llm-engine" / "test-model-cache")


@dataclass
class Platform:
    base_url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    def get(self, path: str, user: str = "batch-user") -> httpx.Response:
        return httpx.get(self.base_url + path, auth=(user, ""), timeout=10)

    def post(self, path: str, body: object, user: str = "batch-user") -> httpx.Response:
        return httpx.post(self.base_url + path, json=body, auth=(user, ""), timeout=30)

    def job(self, job_id: str, user: str = "batch-user") -> dict[str, object]:
        response = self.get(f"/v2/batch-completions/{job_id}", user)
        assert response.status_code == 200, response.text
        job: dict[str, object] = response.json()["job"]
        return job

    def wait_for(self, job_id: str, condition: object, timeout: float = 300) -> dict[str, object]:
        """Poll the job until ``condition(job)`` holds; fail with the last state seen."""
        assert callable(condition)
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while not condition(job):
            assert time.monotonic() < deadline, f"job never reached the expected state: {job}"
            assert self.process.poll() is None, "model-engine serve exited"
            time.sleep(0.2)
            job = self.job(job_id)
        return job

    def peer(self, script: str, timeout: float = 600) -> dict[str, object]:
        """Run ``script`` with the published client pointed at this platform; it prints one JSON line."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the published client, not ours
        env.update({"LLM_ENGINE_BASE_PATH": self.base_url + "/", "SCALE_API_KEY": "batch-user"})
        done = run_peer_script(script, env, timeout=timeout)
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def worker_pid(self, job_id: str, index: int = 0) -> int:
        raw = json.loads((self.data_dir / "jobs" / job_id / f"worker-{index}.pid").read_text())
        return int(raw["pid"])


@contextmanager
def running_platform(tmp: Path, chunk_size: int) -> Iterator[Platform]:
    port = free_port()
    env = {
        **os.environ,
        "LLM_ENGINE_DATA_DIR": str(tmp / "data"),
        "LLM_ENGINE_MODEL_CACHE_DIR": str(MODEL_CACHE),
        "LLM_ENGINE_PORT": str(port),
        "LLM_ENGINE_DEMO_MODEL": "",
        "LLM_ENGINE_BATCH_CHUNK_SIZE": str(chunk_size),
        # One part in the engine at a time: parts are written one after another, so a kill lands between them.
        "LLM_ENGINE_BATCH_MAX_IN_FLIGHT_PROMPTS": str(chunk_size),
        "LLM_ENGINE_RECONCILE_INTERVAL_SECONDS": "0.3",
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-c", "from model_engine_server.cli import app; app()", "serve", "--no-worker"]
    with (tmp / "serve.log").open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    platform = Platform(f"http://127.0.0.1:{port}", tmp / "data", process)
    try:
        wait_healthy(f"{platform.base_url}/healthz", process, timeout=60, output=(tmp / "serve.log").read_text)
        yield platform
    finally:
        stop_process(process, timeout=60)
