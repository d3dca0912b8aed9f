"""The async completion task: admit the task again when it runs (the rules every way in applies; an endpoint at zero
is woken and the task comes back shortly rather than hold a thread while it starts), take a slot, call a replica,
retry what is worth retrying (jittered exponential backoff), and end every other failure with the same readable
reason the synchronous routes answer with."""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Reject

from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.exceptions import DomainError, EndpointWakingError
from model_engine_server.tasks.client import output_to_json
from model_engine_server.tasks.errors import AsyncTaskFailure
from model_engine_server.tasks.policy import TASK_NAME, WAKE_RECHECK_SECONDS, retry_delay
from model_engine_server.tasks.runtime import WorkerRuntime, is_retryable

log = logging.getLogger(__name__)


def register_completion_task(app: Celery, runtime: WorkerRuntime) -> Task:
    @app.task(bind=True, name=TASK_NAME, max_retries=None)  # type: ignore[untyped-decorator]
    def complete(
        self: Task,
        endpoint_id: str,
        endpoint_name: str,
        request: dict[str, Any],
        attempt: int = 0,
        waking_since: float | None = None,
    ) -> dict[str, Any]:
        return run_completion(self, runtime, endpoint_id, endpoint_name, request, attempt, waking_since)

    task: Task = complete
    return task


def run_completion(
    task: Task,
    runtime: WorkerRuntime,
    endpoint_id: str,
    endpoint_name: str,
    request: dict[str, Any],
    attempt: int,
    waking_since: float | None = None,
) -> dict[str, Any]:
    kwargs = {"endpoint_id": endpoint_id, "endpoint_name": endpoint_name, "request": request, "attempt": attempt}
    completion = CompletionRequest(**request)
    since = time.time() if waking_since is None else waking_since  # wall clock: the task may come back elsewhere
    try:
        admitted = runtime.run(runtime.admission.admit_task(endpoint_id, endpoint_name, completion, waking_since=since))
    except EndpointWakingError:
        # Woken, no replica yet: give the thread back to other endpoints' tasks and look again shortly. Not an
        # attempt: a task is never failed for being early, only once the cold-start bound has passed.
        raise task.retry(
            countdown=WAKE_RECHECK_SECONDS, kwargs={**kwargs, "waking_since": since}, max_retries=None
        ) from None
    except DomainError as exc:  # deleted, too long, not ready: the same answers the synchronous routes give
        _retry_or_fail(task, runtime, exc, kwargs, attempt)
    except Exception as exc:  # the registry is briefly unreachable: the task is not at fault
        if attempt + 1 >= runtime.settings.async_task_max_attempts:
            raise AsyncTaskFailure(f"The registry could not be read ({type(exc).__name__}).") from None
        log.warning("Task %s: registry lookup failed (%s); retrying", task.request.id, type(exc).__name__)
        raise task.retry(
            countdown=retry_delay(attempt), kwargs={**kwargs, "attempt": attempt + 1}, max_retries=None
        ) from None
    high_priority = admitted.endpoint.config.high_priority
    if not runtime.gate.try_enter(endpoint_id, runtime.slot_limit(admitted.endpoint), high_priority=high_priority):
        # This endpoint has its share of this worker's slots (maybe all stuck on a slow server), or the threads not
        # kept for high-priority endpoints are all busy: its queue is paused here until a slot frees up, and this
        # message (fetched before the pause) goes back for any worker to take.
        raise Reject(f"endpoint {endpoint_name!r} has all its slots in this worker", requeue=True)
    try:
        output = runtime.run(runtime.complete(admitted, completion))
    except DomainError as exc:
        _retry_or_fail(task, runtime, exc, kwargs, attempt)
    except Exception as exc:  # a bug, not the caller's problem: say so without internals
        log.exception("Task %s failed unexpectedly", task.request.id)
        raise AsyncTaskFailure(f"The worker failed unexpectedly ({type(exc).__name__}).") from None
    finally:
        runtime.gate.leave(endpoint_id, high_priority=high_priority)
    try:
        runtime.run(runtime.account(task.request.id, endpoint_name, output))
    except Exception:  # usage is best effort: never fail a completed task over it
        log.warning("Task %s: could not account its usage", task.request.id, exc_info=True)
    return output_to_json(output)


def _retry_or_fail(
    task: Task, runtime: WorkerRuntime, error: DomainError, kwargs: dict[str, Any], attempt: int
) -> NoReturn:
    attempts = attempt + 1
    if is_retryable(error) and attempts < runtime.settings.async_task_max_attempts:
        log.info("Task %s: %s; retry %d", task.request.id, error.message, attempts)
        raise task.retry(
            countdown=retry_delay(attempt), kwargs={**kwargs, "attempt": attempts}, max_retries=None
        ) from None
    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
    raise AsyncTaskFailure(error.message + suffix) from None
