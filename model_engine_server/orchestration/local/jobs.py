"""Jobs on this machine: each worker is a supervised ``model-engine <entrypoint>`` process with its own log file.

Workers run in their own session so a stop reaches everything they started. Their pid and kernel start time are
kept next to the log, so a restarted control plane adopts workers that still run instead of starting twins.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from model_engine_server.config import Settings
from model_engine_server.domain.jobs import EXIT_JOB_ERROR, JOB_ENTRYPOINTS, Job, RunObservation, RunState
from model_engine_server.orchestration.local.processes import log_tail, process_alive, process_start_time, signal_group

STOP_GRACE_SECONDS = 10.0


@dataclass
class _Worker:
    index: int
    pid: int
    start_time: int | None
    log_path: Path
    process: subprocess.Popen[bytes] | None  # None when adopted from an earlier control plane

    def exit_code(self) -> int | None:
        if self.process is not None:
            return self.process.poll()
        return None if process_alive(self.pid, self.start_time) else -1


def worker_argv(job: Job) -> list[str]:
    """This interpreter running ``model-engine <entrypoint>`` (no reliance on PATH)."""
    program = "from model_engine_server.cli import app; app(prog_name='model-engine')"
    return [sys.executable, "-c", program, JOB_ENTRYPOINTS[job.kind], "--job-id", job.id]


class LocalJobRunner:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dir = settings.data_dir / "jobs"
        self._workers: dict[str, list[_Worker]] = {}

    def log_path(self, job_id: str, index: int) -> Path:
        return self._dir / job_id / f"worker-{index}.log"

    def _environment(self, index: int) -> dict[str, str]:
        settings = self._settings
        env = dict(os.environ)
        env.update(
            {
                "JOB_COMPLETION_INDEX": str(index),
                "LLM_ENGINE_DATA_DIR": str(settings.data_dir),
                "LLM_ENGINE_MODEL_CACHE_DIR": str(settings.models_dir),
                "LLM_ENGINE_OBJECT_STORE_URL": settings.object_store_url,
                "LLM_ENGINE_S3_ENDPOINT_URL": settings.s3_endpoint_url,
                "LLM_ENGINE_S3_REGION": settings.s3_region,
                "LLM_ENGINE_ORCHESTRATOR": settings.orchestrator.value,
            }
        )
        return env

    async def start_job(self, job: Job) -> None:
        await self.stop_job(job)
        workers = []
        for index in range(job.parallelism):
            log_path = self.log_path(job.id, index)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    worker_argv(job),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._environment(index),
                    start_new_session=True,
                )
            worker = _Worker(index, process.pid, process_start_time(process.pid), log_path, process)
            log_path.with_suffix(".pid").write_text(json.dumps({"pid": worker.pid, "start_time": worker.start_time}))
            workers.append(worker)
        self._workers[job.id] = workers

    async def stop_job(self, job: Job) -> None:
        workers = self._workers.pop(job.id, None) or self._adopt(job)
        for worker in workers:
            if worker.exit_code() is None:
                signal_group(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(w.exit_code() is None for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for worker in workers:
            if worker.exit_code() is None:
                signal_group(worker.pid, signal.SIGKILL)
            if worker.process is not None:
                await asyncio.to_thread(worker.process.wait)
            worker.log_path.with_suffix(".pid").unlink(missing_ok=True)

    def _adopt(self, job: Job) -> list[_Worker]:
        """Workers an earlier control plane started that still run."""
        adopted = []
        for index in range(job.parallelism):
            pid_file = self.log_path(job.id, index).with_suffix(".pid")
            try:
                raw = json.loads(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if process_alive(raw["pid"], raw["start_time"]):
                adopted.append(_Worker(index, raw["pid"], raw["start_time"], self.log_path(job.id, index), None))
        return adopted

    async def observe_job(self, job: Job) -> RunObservation:
        workers = self._workers.get(job.id)
        if workers is None:
            workers = self._adopt(job)
            if not workers:
                return RunObservation(RunState.MISSING, "no worker process runs for the job")
            self._workers[job.id] = workers
        codes = [(w, w.exit_code()) for w in workers]
        for worker, code in codes:
            if code is not None and code != 0:
                reason = log_tail(worker.log_path, 0, 3, 400) or f"exit code {code}"
                if code == EXIT_JOB_ERROR:
                    return RunObservation(RunState.FAILED, reason)
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                if code == -signal.SIGKILL:  # what the kernel's OOM killer sends
                    how = "was killed (SIGKILL: out of memory, unless someone killed it)"
                return RunObservation(RunState.CRASHED, f"worker {worker.index} {how}: {reason}")
        if all(code == 0 for _, code in codes) and len(codes) == job.parallelism:
            return RunObservation(RunState.SUCCEEDED)
        return RunObservation(RunState.RUNNING)

    async def close(self) -> None:
        for job_id, workers in list(self._workers.items()):
            for worker in workers:
                if worker.exit_code() is None:
                    signal_group(worker.pid, signal.SIGTERM)
            self._workers.pop(job_id, None)
