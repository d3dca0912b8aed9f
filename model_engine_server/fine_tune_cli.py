"""``model-engine fine-tune-run``: the worker of a fine-tune job (started by the orchestrator, not by people)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Annotated

import typer

from model_engine_server.config import load_settings
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.domain.jobs import Job, JobEvent, JobKind
from model_engine_server.job_cli import JobIdArgument, console, jobs_cancel, jobs_get, jobs_list, with_registry
from model_engine_server.storage.locations import build_object_store
from model_engine_server.storage.workspace import JobWorkspace
from model_engine_server.training.run import read_events


def fine_tune_run(
    job_id: Annotated[str, typer.Option(help="The job to work on (its workspace is in object storage).")],
) -> None:
    """Train the job's LoRA adapter (resuming from its last checkpoint) and upload the merged model."""
    from model_engine_server.domain.jobs import EXIT_JOB_ERROR
    from model_engine_server.training.run import FineTuneJobError, run_fine_tune

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        run_fine_tune(job_id, settings.storage_config(), settings.models_dir)
    except FineTuneJobError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=EXIT_JOB_ERROR) from None


fine_tunes_app = typer.Typer(help="Fine-tune jobs: list, inspect, cancel, and follow their training loss.")


@fine_tunes_app.command("list")
def fine_tunes_list() -> None:
    """Every fine-tune in the registry, of all owners."""
    jobs_list(kind=JobKind.FINE_TUNE)


fine_tunes_app.command("get", help="One fine-tune: progress, result (the fine-tuned model) and events.")(jobs_get)
fine_tunes_app.command("cancel", help="Stop a queued or running fine-tune.")(jobs_cancel)


@fine_tunes_app.command("events")
def fine_tunes_events(
    job_id: JobIdArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the fine-tune ends.")] = False,
) -> None:
    """The job's events and the trainer's loss per step (and validation loss per epoch), oldest first."""
    settings = load_settings()
    ws = JobWorkspace(build_object_store(settings.storage_config()), job_id)
    shown = 0
    while True:
        job, recorded = asyncio.run(with_registry(lambda registry: _job_and_events(registry, job_id)))
        trained = [JobEvent(datetime.fromisoformat(e["timestamp"]), e["level"], e["message"]) for e in read_events(ws)]
        events = sorted(recorded + trained, key=lambda event: event.timestamp)
        for event in events[shown:]:
            console.print(f"{event.timestamp:%H:%M:%S} {event.level:7} {event.message}")
        shown = len(events)
        if not follow or job.status.finished:
            return
        time.sleep(1)


async def _job_and_events(registry: JobRegistry, job_id: str) -> tuple[Job, list[JobEvent]]:
    return await registry.get(job_id), await registry.events(job_id)
