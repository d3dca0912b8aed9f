"""``model-engine batch-run`` (one worker of a batch job) and ``model-engine jobs list|get|cancel``."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from model_engine_server.config import load_settings

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

    from model_engine_server.inference.batch_run import BatchJobError, run_worker
    from model_engine_server.orchestration.local.jobs import EXIT_JOB_ERROR

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    index = worker_index if worker_index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    try:
        run_worker(job_id, index, settings.storage_config(), settings.models_dir)
    except BatchJobError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=EXIT_JOB_ERROR) from None


def _registry():  # type: ignore[no-untyped-def]
    from model_engine_server.db.job_registry import JobRegistry
    from model_engine_server.db.session import create_engine, create_session_factory

    engine = create_engine(load_settings().database_url)
    return engine, JobRegistry(create_session_factory(engine))
