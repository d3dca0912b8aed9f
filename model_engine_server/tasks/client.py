"""The gateway's side of async completions: store the task record and enqueue it; read a task's state back.

Submit writes the ownership record first and enqueues second; if enqueueing fails the record is deleted again and the
caller gets 503, so no task id is handed out for a task that was not stored. (A gateway killed between the two steps
leaves a record that reads PENDING until it expires; no message without a record can exist.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from celery import Celery
from celery import states as celery_states

from model_engine_server.domain.admission import Admission
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, TokenOutput
from model_engine_server.domain.entities import AsyncTaskRecord, ModelEndpoint
from model_engine_server.domain.exceptions import BrokerUnavailableError
from model_engine_server.domain.ports import AsyncTaskRecords
from model_engine_server.tasks.policy import IDLE_QUEUE, TASK_NAME, queue_for

log = logging.getLogger(__name__)

BROKER_CHECK_TIMEOUT_SECONDS = 5.0


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclass(frozen=True)
class TaskState:
    status: TaskStatus
    output: CompletionOutput | None = None  # SUCCESS
    reason: str | None = None  # FAILURE: a readable reason


# Celery's states mapped onto the four the API has: a task waiting for its retry is waiting again.
_STATUS_BY_CELERY_STATE = {
    celery_states.PENDING: TaskStatus.PENDING,
    celery_states.RECEIVED: TaskStatus.PENDING,
    celery_states.RETRY: TaskStatus.PENDING,
    celery_states.STARTED: TaskStatus.STARTED,
    celery_states.SUCCESS: TaskStatus.SUCCESS,
    celery_states.FAILURE: TaskStatus.FAILURE,
    celery_states.REVOKED: TaskStatus.FAILURE,
}


def task_message(endpoint: ModelEndpoint, request: CompletionRequest, attempt: int = 0) -> dict[str, Any]:
    """The task's keyword arguments (JSON). The endpoint is named by id: the worker resolves replicas when it runs."""
    return {"endpoint_id": endpoint.id, "endpoint_name": endpoint.name, "request": asdict(request), "attempt": attempt}


def output_to_json(output: CompletionOutput) -> dict[str, Any]:
    return asdict(output)


def output_from_json(raw: dict[str, Any]) -> CompletionOutput:
    tokens = raw.get("tokens")
    return CompletionOutput(
        text=raw["text"],
        num_prompt_tokens=raw.get("num_prompt_tokens"),
        num_completion_tokens=raw["num_completion_tokens"],
        tokens=[TokenOutput(**token) for token in tokens] if tokens is not None else None,
    )


class AsyncTaskQueue:
    """Built in the gateway's lifespan from a Celery app; the app's connections are pooled and thread-safe.

    Submit applies the gateway's ``Admission`` (the rules of every way in; a task may wait for an endpoint that is
    still starting). A delete seen a second late is harmless: the worker admits each task again when it runs.
    """

    def __init__(self, app: Celery, store: AsyncTaskRecords, ttl: timedelta, admission: Admission) -> None:
        self._app = app
        self._store = store
        self._ttl = ttl
        self._admission = admission

    async def submit(self, caller: str, endpoint_name: str, request: CompletionRequest) -> str:
        """Store and enqueue the task; the admission errors (404, 400, 503 for an endpoint whose servers failed),
        or 503 when the broker is unreachable. Returns the task id."""
        endpoint = await self._admission.admit_to_queue(endpoint_name, caller, request)
        return await self._enqueue(caller, endpoint, request)

    async def _enqueue(self, owner: str, endpoint: ModelEndpoint, request: CompletionRequest) -> str:
        task_id = uuid.uuid4().hex
        await self._store.create(task_id, owner, endpoint, self._ttl)
        try:
            # kombu publishes with blocking I/O; a thread keeps the event loop free.
            await asyncio.to_thread(self._publish, task_id, endpoint, request)
        except Exception as exc:  # whatever stopped the publish, the task was not enqueued
            log.warning("Could not enqueue async task %s: %s: %s", task_id, type(exc).__name__, exc)
            await self._store.delete(task_id)
            raise BrokerUnavailableError(
                f"The task broker is unreachable ({type(exc).__name__}); the task was not created. Retry later."
            ) from exc
        return task_id

    def _publish(self, task_id: str, endpoint: ModelEndpoint, request: CompletionRequest) -> None:
        self._app.send_task(
            TASK_NAME, kwargs=task_message(endpoint, request), task_id=task_id, queue=queue_for(endpoint.id)
        )

    async def state(self, record: AsyncTaskRecord) -> TaskState:
        """The task's state from the result store; 503 (``BrokerUnavailableError``) while it is unreachable."""
        try:
            meta = await asyncio.to_thread(self._app.backend.get_task_meta, record.id)
        except Exception as exc:  # whatever stopped the read, the state is unknown for now; the task is not lost
            log.warning("Could not read the state of async task %s: %s: %s", record.id, type(exc).__name__, exc)
            raise BrokerUnavailableError(
                f"The task broker is unreachable ({type(exc).__name__}); the task's state cannot be read now. "
                "Retry later."
            ) from exc
        status = _STATUS_BY_CELERY_STATE.get(meta.get("status", celery_states.PENDING), TaskStatus.PENDING)
        if status is TaskStatus.SUCCESS:
            return TaskState(status, output=output_from_json(meta["result"]))
        if status is TaskStatus.FAILURE:
            return TaskState(status, reason=_failure_reason(meta))
        if record.endpoint_id is None:  # the endpoint row is gone (ON DELETE SET NULL): its queue is not consumed
            return TaskState(
                TaskStatus.FAILURE,
                reason=f"Model endpoint {record.endpoint_name!r} was deleted before the task ran.",
            )
        return TaskState(status)

    async def check(self) -> None:
        """Raise if the broker cannot be reached (a real round trip, for /readyz)."""
        await asyncio.wait_for(asyncio.to_thread(self._ping), BROKER_CHECK_TIMEOUT_SECONDS)

    def _ping(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
            # Declaring a queue asks the broker for its size: a round trip on Redis and on the SQLite broker.
            connection.default_channel.queue_declare(queue=IDLE_QUEUE, durable=True, auto_delete=False)

    def close(self) -> None:
        self._app.close()


def _failure_reason(meta: dict[str, Any]) -> str:
    result = meta.get("result")
    if isinstance(result, BaseException):
        return str(result) or type(result).__name__
    if isinstance(result, dict) and "exc_message" in result:  # an exception the gateway could not rebuild
        message = result["exc_message"]
        return " ".join(map(str, message)) if isinstance(message, list | tuple) else str(message)
    return "The task was revoked." if meta.get("status") == celery_states.REVOKED else "The task failed."
