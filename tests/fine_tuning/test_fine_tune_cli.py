"""``model-engine fine-tunes list|events`` as an operator runs them, on a registry and workspace of a running job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.migrate import upgrade
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.jobs import Job, JobKind, JobStatus
from model_engine_server.storage.local import LocalObjectStore
from model_engine_server.storage.workspace import JobWorkspace
from model_engine_server.training.run import WorkspaceObserver
from tests.test_jobs_cli import run


def _record(database_url: str, kind: JobKind, job_id: str) -> None:
    async def record() -> None:
        engine = create_engine(database_url)
        now = datetime.now(UTC)
        job = Job(job_id, kind, "team-a", {"fine_tuned_model": "m"}, JobStatus.QUEUED, now, now + timedelta(days=1))
        await JobRegistry(create_session_factory(engine)).create(job)
        await engine.dispose()

    asyncio.run(record())


def test_list_shows_fine_tunes_only_and_events_show_the_loss(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    upgrade(database_url)
    _record(database_url, JobKind.FINE_TUNE, "job-ft-1")
    _record(database_url, JobKind.BATCH_COMPLETION, "job-batch-1")
    observer = WorkspaceObserver(JobWorkspace(LocalObjectStore(tmp_path / "objects"), "job-ft-1"))
    observer.event("info", "step 1/4 epoch 1 train_loss 3.1000")
    observer.event("info", "epoch 1 validation_loss 2.9000")
    observer.flush()

    listing = run("fine-tunes", "list", data_dir=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "job-ft-1" in listing.stdout and "job-batch-1" not in listing.stdout

    events = run("fine-tunes", "events", "job-ft-1", data_dir=tmp_path)
    assert events.returncode == 0, events.stderr
    lines = [line for line in events.stdout.splitlines() if line.strip()]
    assert [line.split(maxsplit=2)[2] for line in lines] == [
        "Job queued.",
        "step 1/4 epoch 1 train_loss 3.1000",
        "epoch 1 validation_loss 2.9000",
    ]
