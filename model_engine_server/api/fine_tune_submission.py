"""Accepting a fine-tune: every check a person can act on happens here, before anything is queued.

The training (and validation) file must be one of the caller's files and a CSV with prompt/response columns, no row
certainly longer than ``max_length`` (itself within the model's context); the base model a zoo model or one of the
caller's own fine-tuned models; the hyperparameters known and in range. Then the job's workspace gets the worker spec
and the data, the job is recorded QUEUED and the reconciler is woken.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from model_engine_server.api.fine_tune_schemas import CreateFineTuneRequest
from model_engine_server.api.job_services import FilesAndJobs, parse_body
from model_engine_server.db.job_registry import new_job_id
from model_engine_server.domain.exceptions import InvalidRequestError, NotFoundError, OverloadedError
from model_engine_server.domain.fine_tuning import (
    FineTuneWorkerSpec,
    Hyperparameters,
    check_lengths,
    check_suffix,
    fine_tuned_model_name,
    parse_training_csv,
)
from model_engine_server.domain.jobs import Job, JobKind, JobResources, JobStatus
from model_engine_server.domain.model_zoo import ZooEntry
from model_engine_server.storage.locations import open_location
from model_engine_server.storage.port import ObjectNotFoundError
from model_engine_server.storage.workspace import JobWorkspace


async def submit_fine_tune(services: FilesAndJobs, caller: str, body: Any) -> Job:
    request = parse_body(CreateFineTuneRequest, body)
    params = Hyperparameters.parse(request.hyperparameters)
    check_suffix(request.suffix)
    checkpoint_path, zoo_entry = await _base_model(services, caller, request.model)
    train_csv = await _read_csv(services, caller, request.training_file, "training_file")
    examples = parse_training_csv(train_csv.decode(), "training_file")
    check_lengths(examples, params.max_length, zoo_entry.context_length, request.model, "training_file")
    validation_csv = None
    if request.validation_file:
        validation_csv = await _read_csv(services, caller, request.validation_file, "validation_file")
        validation = parse_training_csv(validation_csv.decode(), "validation_file")
        check_lengths(validation, params.max_length, zoo_entry.context_length, request.model, "validation_file")
    await _check_concurrency(services, caller)
    await services.check_job_admission(caller, JobKind.FINE_TUNE)
    now = datetime.now(UTC)
    job_id = new_job_id()
    spec = FineTuneWorkerSpec(
        base_model=request.model,
        checkpoint_path=checkpoint_path,
        fine_tuned_model=fine_tuned_model_name(request.model, request.suffix, now),
        hyperparameters=request.hyperparameters or {},
        has_validation=validation_csv is not None,
    )
    workspace = JobWorkspace(services.store, job_id)
    await asyncio.to_thread(_write_workspace, workspace, spec, train_csv, validation_csv)
    max_runtime = services.settings.fine_tune_max_runtime_seconds
    job = Job(
        id=job_id,
        kind=JobKind.FINE_TUNE,
        owner=caller,
        spec={
            "model": request.model,
            "training_file": request.training_file,
            "validation_file": request.validation_file,
            "hyperparameters": request.hyperparameters or {},
            "suffix": request.suffix,
            "fine_tuned_model": spec.fine_tuned_model,
        },
        status=JobStatus.QUEUED,
        created_at=now,
        expires_at=now + timedelta(seconds=max_runtime),
        max_runtime_sec=max_runtime,
        resources=JobResources(
            cpus=zoo_entry.cpus, gpus=zoo_entry.gpus, memory=zoo_entry.memory, gpu_type=zoo_entry.gpu_type
        ),
        progress_total=math.ceil(len(examples) / params.batch_size) * params.epochs,
    )
    await services.jobs.create(job)
    if request.wandb_config:
        await services.jobs.add_event(
            job_id,
            "wandb_config was accepted but is ignored: this platform does not "
            "report to Weights & Biases; follow the loss in these events.",
            "warning",
        )
    services.on_change()
    return job


async def _base_model(services: FilesAndJobs, caller: str, model: str) -> tuple[str | None, ZooEntry]:
    """The checkpoint to start from (None: the zoo's weights) and the zoo model it derives from (its hardware and
    context length)."""
    entry = services.zoo.get(model)
    if entry is not None:
        return None, entry
    fine_tuned = await services.jobs.find_fine_tuned_model(caller, model)
    if fine_tuned is None:
        known = ", ".join(services.zoo.names())
        raise InvalidRequestError(
            f"Unknown model {model!r}: use a model-zoo name ({known}) or one of your fine-tuned models."
        )
    _, entry = await _base_model(services, caller, fine_tuned.base_model)
    return fine_tuned.checkpoint_path, entry


async def _read_csv(services: FilesAndJobs, caller: str, file_id: str, what: str) -> bytes:
    try:
        stored = await services.files.get_owned(file_id, caller)
        store, key = open_location(stored.location, services.storage)
        data = await asyncio.to_thread(store.get, key)
    except (NotFoundError, ObjectNotFoundError):
        raise InvalidRequestError(
            f"{what} {file_id!r} was not found among your files; upload it with "
            "File.upload (POST /v1/files) and pass its id."
        ) from None
    try:
        data.decode()
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"{what} is not UTF-8 text (byte {error.start}); save the CSV as UTF-8.") from None
    return data


async def _check_concurrency(services: FilesAndJobs, caller: str) -> None:
    limit = services.settings.fine_tune_max_concurrent_per_tenant
    if await services.jobs.count_active(caller, JobKind.FINE_TUNE) >= limit:
        raise OverloadedError(
            f"You have {limit} fine-tunes queued or running, the most allowed at once; "
            "wait for one to finish or cancel one."
        )


def _write_workspace(workspace: JobWorkspace, spec: FineTuneWorkerSpec, train: bytes, validation: bytes | None) -> None:
    workspace.store.put(workspace.prefix + "train.csv", train)
    if validation is not None:
        workspace.store.put(workspace.prefix + "validation.csv", validation)
    workspace.write_json("job.json", spec.to_json())  # last: a worker never finds a spec without its data
