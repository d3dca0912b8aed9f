"""``model-engine fine-tune-run``: the worker of a fine-tune job (started by the orchestrator, not by people)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from model_engine_server.config import load_settings


def fine_tune_run(
    job_id: Annotated[str, typer.Option(help="The job to work on (its workspace is in object storage).")],
) -> None:
    """Train the job's LoRA adapter (resuming from its last checkpoint) and upload the merged model."""
    from model_engine_server.orchestration.local.jobs import EXIT_JOB_ERROR
    from model_engine_server.training.run import FineTuneJobError, run_fine_tune

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        run_fine_tune(job_id, settings.storage_config(), settings.models_dir)
    except FineTuneJobError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=EXIT_JOB_ERROR) from None
