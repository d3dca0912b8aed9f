"""``model-engine jobs list|get|cancel`` as an operator runs them, on a registry holding a running job."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.migrate import upgrade
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.jobs import Job, JobKind, JobStatus


def run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLM_ENGINE_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "model_engine_server", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _record_running_job(database_url: str) -> str:
    async def record() -> str:
        engine = create_engine(database_url)
        registry = JobRegistry(create_session_factory(engine))
        now = datetime.now(UTC)
        job = Job("job-cli-1", JobKind.BATCH_COMPLETION, "team-a", {}, JobStatus.QUEUED, now, now + timedelta(days=1))
        job.progress_total = 40
        await registry.create(job)
        await registry.update(job.id, status=JobStatus.RUNNING, progress_done=10)
        await engine.dispose()
        return job.id

    return asyncio.run(record())


def test_list_get_and_cancel(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    upgrade(database_url)
    job_id = _record_running_job(database_url)

    listing = run("jobs", "list", data_dir=tmp_path)
    assert listing.returncode == 0, listing.stderr
    (row,) = [line for line in listing.stdout.splitlines() if job_id in line]
    assert "running" in row and "10/40" in row
    assert "█████░░░░░░░░░░░░░░░ 10/40 (25%)" in row  # a progress bar, a quarter full

    shown = run("jobs", "get", job_id, data_dir=tmp_path)
    assert "10/40" in shown.stdout and "Job queued." in shown.stdout
    assert "█████░░░░░░░░░░░░░░░ 10/40 (25%)" in shown.stdout

    assert f"Cancelling {job_id}" in run("jobs", "cancel", job_id, data_dir=tmp_path).stdout
    assert "cancel requested" in run("jobs", "get", job_id, data_dir=tmp_path).stdout
    missing = run("jobs", "get", "job-missing", data_dir=tmp_path)
    assert missing.returncode == 1 and "not found" in missing.stdout
