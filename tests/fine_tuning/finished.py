"""A fine-tune as the reconciler leaves it after SUCCESS: its record and its merged checkpoint in object storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from model_engine_server.db.job_registry import JobRegistry, new_job_id
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.fine_tuning import MERGED_RESULT_DIR
from model_engine_server.domain.jobs import Job, JobKind, JobStatus
from model_engine_server.storage.port import ObjectStore
from model_engine_server.storage.workspace import JobWorkspace

MERGED_FILES = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": b"\x00" * 64}


async def record_finished_fine_tune(database_url: str, store: ObjectStore, owner: str, model: str) -> str:
    """The id of a finished fine-tune of ``owner``'s whose result is ``model`` (files: ``MERGED_FILES``)."""
    job_id = new_job_id()
    workspace = JobWorkspace(store, job_id)
    for name, data in MERGED_FILES.items():
        store.put(f"{workspace.prefix}{MERGED_RESULT_DIR}/{name}", data)
    now = datetime.now(UTC)
    job = Job(
        id=job_id,
        kind=JobKind.FINE_TUNE,
        owner=owner,
        spec={"model": "smollm2-135m", "fine_tuned_model": model},
        status=JobStatus.COMPLETED,
        created_at=now,
        expires_at=now + timedelta(days=1),
        completed_at=now,
        result={"fine_tuned_model": model, "checkpoint_path": f"{store.url}/{workspace.prefix}{MERGED_RESULT_DIR}"},
    )
    engine = create_engine(database_url)
    try:
        await JobRegistry(create_session_factory(engine)).create(job)
    finally:
        await engine.dispose()
    return job_id
