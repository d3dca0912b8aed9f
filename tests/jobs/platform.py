"""``model-engine serve`` as a user runs it (a subprocess on a free port), for end-to-end job tests."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model_engine_server.testing import eventually
from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import start_platform

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

    def wait_for(
        self, job_id: str, condition: Callable[[dict[str, object]], bool], timeout: float = 300
    ) -> dict[str, object]:
        """Poll the job until ``condition(job)`` holds; fail with the last state seen."""

        def probe() -> dict[str, object]:
            assert self.process.poll() is None, "model-engine serve exited"
            return self.job(job_id)

        return eventually(probe, condition, timeout=timeout, interval=0.2, what=f"job {job_id} in the expected state")

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
    """``model-engine serve`` without the demo endpoint or the async worker; job workers use one thread each."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # inherited by the job workers it starts
        served = start_platform(
            "serve",
            tmp / "data",
            migrate=False,
            extra_args=["--no-worker"],
            model_cache_dir=str(MODEL_CACHE),
            demo_model="",
            batch_chunk_size=str(chunk_size),
            # One part in the engine at a time: parts are written one after another, so a kill lands between them.
            batch_max_in_flight_prompts=str(chunk_size),
            reconcile_interval_seconds="0.3",
        )
    try:
        yield Platform(served.url, served.data_dir, served.process)
    finally:
        served.stop(timeout=60)
