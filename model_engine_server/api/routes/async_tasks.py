"""``POST /v1/llm/completions-async`` and ``GET /v1/async-tasks/{task_id}``: enqueue a completion, read it back.

A SUCCESS result is the same object ``completions-sync`` answers with (built by the same function), with the task
id as its ``request_id``. A FAILURE carries a readable reason in ``traceback``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from model_engine_server.api.completion_schemas import CompletionRequestBody, sync_response_payload
from model_engine_server.api.deps import AsyncTaskQueueDep, CallerDep, ServicesDep
from model_engine_server.tasks.client import TaskStatus

router = APIRouter(tags=["async tasks"])

EndpointNameQuery = Annotated[str, Query(min_length=1, description="The model endpoint to send the prompt to.")]
TaskIdPath = Annotated[str, Path(min_length=1, description="The id `completions-async` returned.")]


class CreateAsyncTaskResponse(BaseModel):
    task_id: str


class GetAsyncTaskResponse(BaseModel):
    task_id: str
    status: Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]
    result: dict[str, Any] | None = None
    traceback: str | None = None


@router.post("/v1/llm/completions-async", response_model=CreateAsyncTaskResponse)
async def create_async_completion(
    body: CompletionRequestBody,
    model_endpoint_name: EndpointNameQuery,
    caller: CallerDep,
    queue: AsyncTaskQueueDep,
) -> CreateAsyncTaskResponse:
    """Queue the completion on the endpoint's own queue and answer at once with the task's id."""
    task_id = await queue.submit(caller, model_endpoint_name, body.to_domain())
    return CreateAsyncTaskResponse(task_id=task_id)


@router.get("/v1/async-tasks/{task_id}", response_model=GetAsyncTaskResponse)
async def get_async_task(
    task_id: TaskIdPath, caller: CallerDep, services: ServicesDep, queue: AsyncTaskQueueDep
) -> GetAsyncTaskResponse:
    """The task's status; its result once it succeeded. Tasks of other callers and expired tasks are 404."""
    record = await services.tasks.get_owned(task_id, caller)
    state = await queue.state(record)
    result = sync_response_payload(record.id, state.output) if state.output is not None else None
    traceback = state.reason if state.status is TaskStatus.FAILURE else None
    return GetAsyncTaskResponse(task_id=record.id, status=state.status.value, result=result, traceback=traceback)
