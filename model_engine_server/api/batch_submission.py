"""Accepting a batch-completion job: every check happens here, before anything is queued.

Content (inline or read from ``input_data_path``: a file id, ``s3://`` or — on one machine — ``file://``) becomes
one ``BatchItem`` per prompt in the job's workspace, next to the workers' ``job.json``; then the job is recorded
QUEUED and the reconciler is woken.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from model_engine_server.api.batch_schemas import BatchRequest, V2Request
from model_engine_server.api.completion_schemas import CompletionRequestBody
from model_engine_server.api.job_services import FilesAndJobs, parse_body
from model_engine_server.db.job_registry import new_job_id
from model_engine_server.domain.batch import BatchItem, BatchWorkerSpec, OutputFormat
from model_engine_server.domain.exceptions import InvalidRequestError, NotFoundError
from model_engine_server.domain.jobs import Job, JobKind, JobResources, JobStatus
from model_engine_server.storage.locations import UnsupportedLocationError, open_location
from model_engine_server.storage.port import ObjectNotFoundError, ObjectStoreError
from model_engine_server.storage.workspace import JobWorkspace


async def submit_batch(services: FilesAndJobs, caller: str, body: Any, *, version: int) -> Job:
    request = parse_body(BatchRequest, body)
    if (request.content is None) == (request.input_data_path is None):
        raise InvalidRequestError("Provide exactly one of `content` and `input_data_path`.")
    _check_model(services, request)
    _check_output(services, request.output_data_path)
    content = request.content if request.content is not None else await _read_input(services, caller, request)
    items, output_format = _items(content, request, version)
    _check_fits(services, request, items)
    await services.check_job_admission(caller, JobKind.BATCH_COMPLETION)
    job_id = new_job_id()
    spec = BatchWorkerSpec(
        model=request.model_config_.model,
        checkpoint_path=request.model_config_.checkpoint_path,
        max_context_length=request.model_config_.max_context_length,
        output_data_path=request.output_data_path,
        output_format=output_format,
        total=len(items),
        chunk_size=services.settings.batch_chunk_size,
        workers=min(request.data_parallelism or 1, len(items)),
        max_in_flight=services.settings.batch_max_in_flight_prompts,
    )
    workspace = JobWorkspace(services.store, job_id)
    await asyncio.to_thread(workspace.write_json, "input.json", [item.model_dump(exclude_none=True) for item in items])
    await asyncio.to_thread(workspace.write_json, "job.json", spec.model_dump(mode="json"))
    now = datetime.now(UTC)
    max_runtime = request.max_runtime_sec or 24 * 3600
    job = Job(
        id=job_id,
        kind=JobKind.BATCH_COMPLETION,
        owner=caller,
        spec={
            "api_version": version,
            "input_data_path": request.input_data_path,
            "output_data_path": request.output_data_path,
            "model_config": request.model_config_.model_dump(),
            "labels": {**request.model_config_.labels, **request.labels},
        },
        status=JobStatus.QUEUED,
        created_at=now,
        expires_at=now + timedelta(seconds=max_runtime),
        parallelism=spec.workers,
        max_runtime_sec=max_runtime,
        resources=_resources(services, request),
        priority=request.priority,
        progress_total=len(items),
    )
    await services.jobs.create(job)
    services.on_change()
    return job


def _check_model(services: FilesAndJobs, request: BatchRequest) -> None:
    config = request.model_config_
    if config.checkpoint_path:
        if "://" not in config.checkpoint_path and not Path(config.checkpoint_path).exists():
            raise InvalidRequestError(f"model_config.checkpoint_path {config.checkpoint_path!r} does not exist.")
        return
    if services.zoo.get(config.model) is None:
        known = ", ".join(services.zoo.names()) or "none"
        raise InvalidRequestError(
            f"Unknown model {config.model!r}: use a model-zoo name ({known}) or give model_config.checkpoint_path."
        )


def _check_fits(services: FilesAndJobs, request: BatchRequest, items: list[BatchItem]) -> None:
    """The admission rule of the completion routes: ``max_new_tokens`` within the model's context (from the zoo).
    Prompt lengths need the tokenizer; the job checks them and fails naming the row."""
    entry = services.zoo.get(request.model_config_.model)
    context = request.model_config_.max_context_length or (entry.context_length if entry else None)
    longest = max(item.max_new_tokens for item in items)
    if context is not None and longest > context:
        raise InvalidRequestError(
            f"max_new_tokens ({longest}) exceeds the context length of {request.model_config_.model} "
            f"({context} tokens)."
        )


def _check_output(services: FilesAndJobs, path: str) -> None:
    try:
        open_location(path, services.storage)
    except UnsupportedLocationError as error:
        raise InvalidRequestError(f"output_data_path: {error}") from None


async def _read_input(services: FilesAndJobs, caller: str, request: BatchRequest) -> Any:
    path = request.input_data_path
    assert path is not None
    try:
        if path.startswith("file-"):
            location = (await services.files.get_owned(path, caller)).location
        else:
            location = path
        store, key = open_location(location, services.storage)
        raw = await asyncio.to_thread(store.get, key)
    except (NotFoundError, ObjectNotFoundError):
        raise InvalidRequestError(f"input_data_path {path!r} cannot be read: no such file.") from None
    except ObjectStoreError as error:
        raise InvalidRequestError(f"input_data_path {path!r} cannot be read: {error}") from None
    except UnsupportedLocationError as error:
        raise InvalidRequestError(f"input_data_path: {error}") from None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise InvalidRequestError(f"input_data_path {path!r} is not valid JSON: {error}") from None


def _items(content: Any, request: BatchRequest, version: int) -> tuple[list[BatchItem], OutputFormat]:
    seed = request.model_config_.seed
    if isinstance(content, dict):
        return _v1_items(content, seed), OutputFormat.V1
    if version == 1 or not isinstance(content, list) or not content:
        expected = "an object {prompts, max_new_tokens, temperature, ...}"
        if version == 2:
            expected += " or a non-empty list of completion or chat requests"
        raise InvalidRequestError(f"content must be {expected}.")
    return _v2_items(content, seed)


def _v1_items(content: dict[str, Any], seed: int | None) -> list[BatchItem]:
    """``{prompts, max_new_tokens, temperature, ...}``: each prompt checked as the completion routes check one."""
    prompts = content.get("prompts")
    if prompts is None:
        raise InvalidRequestError("content has no `prompts`: give {prompts, max_new_tokens, temperature, ...}.")
    if not isinstance(prompts, list) or not prompts:
        raise InvalidRequestError("content.prompts must be a non-empty list of strings.")
    shared = {key: value for key, value in content.items() if key != "prompts"}
    items = []
    for row, prompt in enumerate(prompts):
        try:
            request = CompletionRequestBody.model_validate({**shared, "prompt": prompt}).to_domain()
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "content"
            place = f"content.prompts[{row}]" if where == "prompt" else f"content.{where}"
            raise InvalidRequestError(f"{place}: {first['msg']}") from None
        items.append(
            BatchItem(
                prompt=request.prompt,
                max_new_tokens=request.max_new_tokens,
                temperature=request.temperature,
                stop=request.stop_sequences,
                return_token_log_probs=request.return_token_log_probs,
                top_k=request.top_k,
                top_p=request.top_p,
                presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty,
                seed=seed,
            )
        )
    return items


def _v2_items(content: list[Any], seed: int | None) -> tuple[list[BatchItem], OutputFormat]:
    items: list[BatchItem] = []
    kinds = set()
    for row, raw in enumerate(content):
        try:
            request = V2Request.model_validate(raw)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            raise InvalidRequestError(f"content row {row}: {where}: {first['msg']}") from None
        kinds.add(request.messages is None)
        stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
        items.append(
            BatchItem(
                prompt=request.prompt,
                messages=request.messages,
                max_new_tokens=request.max_completion_tokens or request.max_tokens or 16,
                temperature=request.temperature if request.temperature is not None else 1.0,
                stop=stop,
                top_k=request.top_k,
                top_p=request.top_p,
                presence_penalty=request.presence_penalty,
                frequency_penalty=request.frequency_penalty,
                seed=request.seed if request.seed is not None else seed,
            )
        )
    if len(kinds) > 1:
        raise InvalidRequestError("content mixes completion (`prompt`) and chat (`messages`) requests; use one kind.")
    return items, OutputFormat.COMPLETION if kinds == {True} else OutputFormat.CHAT


def _resources(services: FilesAndJobs, request: BatchRequest) -> JobResources:
    entry = services.zoo.get(request.model_config_.model)
    return JobResources(
        cpus=str(request.cpus) if request.cpus is not None else (entry.cpus if entry else "2"),
        gpus=request.gpus if request.gpus is not None else (entry.gpus if entry else 0),
        memory=request.memory or (entry.memory if entry else "8Gi"),
        gpu_type=request.gpu_type or (entry.gpu_type if entry else None),
        storage=request.storage,
    )
