"""``model-engine batch-run`` (one worker of a batch job) and ``model-engine jobs list|get|cancel``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from model_engine_server.config import load_settings
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.registry import Registry
from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.domain.jobs import Job, JobEvent, JobKind

T = TypeVar("T")
jobs_app = typer.Typer(help="Batch-completion and fine-tune jobs (this installation's registry).", no_args_is_help=True)
console = Console()

JobIdArgument = Annotated[str, typer.Argument(help="The job's id (job-...).")]


def batch_run(
    job_id: Annotated[str, typer.Option(help="The job to work on (its workspace is in object storage).")],
    worker_index: Annotated[
        int | None, typer.Option(help="This worker's index (default: $JOB_COMPLETION_INDEX, else 0).")
    ] = None,
) -> None:
    """Run one worker of a batch-completion job: load the model, complete this worker's share, write results."""
    import logging

    from model_engine_server.domain.jobs import EXIT_JOB_ERROR
    from model_engine_server.inference.batch_run import BatchJobError, run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    index = worker_index if worker_index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    try:
        run_worker(job_id, index, settings.storage_config(), settings.models_dir)
    except BatchJobError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=EXIT_JOB_ERROR) from None


async def with_registry(action: Callable[[JobRegistry], Awaitable[T]]) -> T:
    registry = Registry(load_settings().database_url)
    try:
        return await action(registry.jobs)
    finally:
        await registry.close()


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``█████░░░░░░░░░░░░░░░ 10/40 (25%)``: readable in a terminal and in a log or pipe alike."""
    filled = width * done // total if total else 0
    percent = f" ({100 * done // total}%)" if total else ""
    return "█" * filled + "░" * (width - filled) + f" {done}/{total}{percent}"


@jobs_app.command("list")
def jobs_list(kind: Annotated[JobKind | None, typer.Option(help="Only jobs of this kind.")] = None) -> None:
    """Every job in the registry, of all owners, with its progress."""
    jobs = asyncio.run(with_registry(lambda registry: registry.list_all()))
    jobs = [job for job in jobs if kind is None or job.kind is kind]
    table = Table("id", "kind", "owner", "status", "progress", "created", "reason")
    for job in jobs:
        table.add_row(
            job.id,
            job.kind.value,
            job.owner,
            job.status.value,
            progress_bar(job.progress_done, job.progress_total),
            job.created_at.strftime("%Y-%m-%d %H:%M"),
            job.status_reason or "",
        )
    console.print(table)


@jobs_app.command("get")
def jobs_get(job_id: JobIdArgument) -> None:
    """One job: its progress bar, spec, result and events."""

    async def read(registry: JobRegistry) -> tuple[Job, list[JobEvent]]:
        job = await registry.get(job_id)
        return job, await registry.events(job_id)

    try:
        job, events = asyncio.run(with_registry(read))
    except NotFoundError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{job.id} [bold]{job.status.value}[/bold] {progress_bar(job.progress_done, job.progress_total)}")
    console.print(f"kind {job.kind.value} · owner {job.owner} · workers {job.parallelism} · restarts {job.restarts}")
    if job.cancel_requested and not job.status.finished:
        console.print("cancel requested: the reconciler stops it on its next pass")
    if job.status_reason:
        console.print(f"reason: {job.status_reason}")
    for key, value in job.result.items():
        console.print(f"{key}: {value}")
    for event in events:
        console.print(f"{event.timestamp:%H:%M:%S} {event.level:7} {event.message}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobIdArgument) -> None:
    """Ask the reconciler to stop a queued or running job."""

    async def cancel(registry: JobRegistry) -> bool:
        await registry.get(job_id)
        return await registry.request_cancel(job_id)

    try:
        cancelled = asyncio.run(with_registry(cancel))
    except NotFoundError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Cancelling {job_id}." if cancelled else f"{job_id} has already finished.")
