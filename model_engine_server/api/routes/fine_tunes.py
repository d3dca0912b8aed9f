"""``/v1/llm/fine-tunes``: LoRA fine-tunes run as jobs; ``/v1/llm/model-endpoints/download``: their weights."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Request, Response

from model_engine_server.api.deps import CallerDep
from model_engine_server.api.download_links import ROUTE, check_link, download_url
from model_engine_server.api.fine_tune_schemas import (
    CancelFineTuneResponse,
    CreateFineTuneResponse,
    FineTuneEvent,
    GetFineTuneEventsResponse,
    GetFineTuneResponse,
    ListFineTunesResponse,
    ModelDownloadRequest,
    ModelDownloadResponse,
)
from model_engine_server.api.fine_tune_submission import submit_fine_tune
from model_engine_server.api.job_services import FilesAndJobsDep, parse_body
from model_engine_server.domain.exceptions import InvalidRequestError, NotFoundError
from model_engine_server.domain.jobs import JobEvent, JobKind
from model_engine_server.storage.port import ObjectNotFoundError
from model_engine_server.storage.workspace import JobWorkspace
from model_engine_server.training.run import read_events, result_files

router = APIRouter(tags=["fine-tunes"])
_KIND = JobKind.FINE_TUNE


@router.post("/v1/llm/fine-tunes", response_model=CreateFineTuneResponse)
async def create_fine_tune(
    caller: CallerDep, services: FilesAndJobsDep, body: Any = Body(...)
) -> CreateFineTuneResponse:
    job = await submit_fine_tune(services, caller, body)
    return CreateFineTuneResponse(id=job.id)


@router.get("/v1/llm/fine-tunes", response_model=ListFineTunesResponse)
async def list_fine_tunes(caller: CallerDep, services: FilesAndJobsDep) -> ListFineTunesResponse:
    jobs = await services.jobs.list_owned(caller, _KIND)
    return ListFineTunesResponse(jobs=[GetFineTuneResponse.of(job) for job in jobs])


@router.get("/v1/llm/fine-tunes/{fine_tune_id}", response_model=GetFineTuneResponse)
async def get_fine_tune(fine_tune_id: str, caller: CallerDep, services: FilesAndJobsDep) -> GetFineTuneResponse:
    return GetFineTuneResponse.of(await services.jobs.get_owned(fine_tune_id, caller, _KIND))


@router.put("/v1/llm/fine-tunes/{fine_tune_id}/cancel", response_model=CancelFineTuneResponse)
async def cancel_fine_tune(fine_tune_id: str, caller: CallerDep, services: FilesAndJobsDep) -> CancelFineTuneResponse:
    return CancelFineTuneResponse(success=await services.cancel_owned(fine_tune_id, caller, _KIND))


@router.get("/v1/llm/fine-tunes/{fine_tune_id}/events", response_model=GetFineTuneEventsResponse)
async def get_fine_tune_events(
    fine_tune_id: str, caller: CallerDep, services: FilesAndJobsDep
) -> GetFineTuneEventsResponse:
    """The job's own events (queued, started, restarted, finished) and the trainer's (loss per step and epoch)."""
    await services.jobs.get_owned(fine_tune_id, caller, _KIND)
    recorded = [FineTuneEvent.of(event) for event in await services.jobs.events(fine_tune_id)]
    workspace = JobWorkspace(services.store, fine_tune_id)
    trained = [FineTuneEvent.of(_event(raw)) for raw in await asyncio.to_thread(read_events, workspace)]
    return GetFineTuneEventsResponse(events=sorted(recorded + trained, key=lambda event: event.timestamp))


def _event(raw: dict[str, Any]) -> JobEvent:
    from datetime import datetime

    return JobEvent(datetime.fromisoformat(raw["timestamp"]), raw["level"], raw["message"])


@router.post("/v1/llm/model-endpoints/download", response_model=ModelDownloadResponse)
async def download_model(
    request: Request, caller: CallerDep, services: FilesAndJobsDep, body: Any = Body(...)
) -> ModelDownloadResponse:
    wanted = parse_body(ModelDownloadRequest, body)
    if wanted.download_format != "hugging_face":
        raise InvalidRequestError(f"download_format {wanted.download_format!r} is not supported; use hugging_face.")
    model = await services.jobs.find_fine_tuned_model(caller, wanted.model_name)
    if model is None:
        raise NotFoundError(f"You have no fine-tuned model named {wanted.model_name!r}.")
    workspace = JobWorkspace(services.store, model.job_id)
    files = await asyncio.to_thread(result_files, workspace)
    secret: bytes = request.app.state.download_secret
    base = str(request.base_url)
    return ModelDownloadResponse(
        urls={name: download_url(services.store, key, base, secret) for name, key in sorted(files.items())}
    )


@router.get(ROUTE + "/{key:path}", include_in_schema=False)
async def model_file(key: str, expires: int, signature: str, request: Request, services: FilesAndJobsDep) -> Response:
    """What a local download link serves; the signature, not an API key, is the credential."""
    check_link(key, expires, signature, request.app.state.download_secret)
    try:
        data = await asyncio.to_thread(services.store.get, key)
    except ObjectNotFoundError:
        raise NotFoundError("This file no longer exists.") from None
    return Response(data, media_type="application/octet-stream")
