"""``/v1/llm/batch-completions`` and ``/v2/batch-completions``: run a model over a whole data set as a job."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from model_engine_server.api.batch_schemas import (
    BatchJobResponse,
    CancelBatchJobResponse,
    CreateBatchV1Response,
    GetBatchJobResponse,
    UpdateBatchJobRequest,
    UpdateBatchJobResponse,
)
from model_engine_server.api.batch_submission import submit_batch
from model_engine_server.api.deps import CallerDep
from model_engine_server.api.job_services import FilesAndJobsDep, parse_body
from model_engine_server.domain.jobs import JobKind

router = APIRouter(tags=["batch completions"])

_KIND = JobKind.BATCH_COMPLETION


@router.post("/v1/llm/batch-completions", response_model=CreateBatchV1Response)
async def create_batch_v1(caller: CallerDep, services: FilesAndJobsDep, body: Any = Body(...)) -> CreateBatchV1Response:
    job = await submit_batch(services, caller, body, version=1)
    return CreateBatchV1Response(job_id=job.id)


@router.post("/v2/batch-completions", response_model=BatchJobResponse)
async def create_batch_v2(caller: CallerDep, services: FilesAndJobsDep, body: Any = Body(...)) -> BatchJobResponse:
    return BatchJobResponse.of(await submit_batch(services, caller, body, version=2))


@router.get("/v2/batch-completions/{job_id}", response_model=GetBatchJobResponse)
async def get_batch(job_id: str, caller: CallerDep, services: FilesAndJobsDep) -> GetBatchJobResponse:
    return GetBatchJobResponse(job=BatchJobResponse.of(await services.jobs.get_owned(job_id, caller, _KIND)))


@router.post("/v2/batch-completions/{job_id}", response_model=UpdateBatchJobResponse)
async def update_batch(
    job_id: str, caller: CallerDep, services: FilesAndJobsDep, body: Any = Body(default=None)
) -> UpdateBatchJobResponse:
    update = parse_body(UpdateBatchJobRequest, body or {})
    await services.jobs.get_owned(job_id, caller, _KIND)
    await services.jobs.set_priority(job_id, update.priority)
    job = await services.jobs.get_owned(job_id, caller, _KIND)
    return UpdateBatchJobResponse(**BatchJobResponse.of(job).model_dump(), success=True)


@router.post("/v2/batch-completions/{job_id}/actions/cancel", response_model=CancelBatchJobResponse)
async def cancel_batch(job_id: str, caller: CallerDep, services: FilesAndJobsDep) -> CancelBatchJobResponse:
    return CancelBatchJobResponse(success=await services.cancel_owned(job_id, caller, _KIND))
