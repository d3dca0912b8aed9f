"""Completions: ``Completion.create`` / ``acreate`` (sync or streamed) and ``submit`` / ``asubmit`` (async tasks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from llmengine import _transport
from llmengine import batch_completion as _batch
from llmengine._constants import DEFAULT_TIMEOUT
from llmengine._core.request_specs import task_status_request
from llmengine._core.responses import completion_from_task, parse_body
from llmengine._core.retry import poll_intervals
from llmengine._faces import CompletionArguments, CreateCall, SubmitCall, public_method
from llmengine.data_types import (
    CompletionSyncV1Response,
    CreateAsyncTaskV1Response,
    GetAsyncTaskV1Response,
    TaskStatus,
)
from llmengine.errors import TaskTimeoutError
from llmengine.streaming import AsyncCompletionStream, CompletionStream


def _create(call: CompletionArguments) -> CompletionSyncV1Response | CompletionStream:
    """A completion of ``prompt`` from the endpoint ``model``.

    Returns a ``CompletionSyncV1Response``; with ``stream=True`` a ``CompletionStream`` yielding
    ``CompletionStreamV1Response`` events, the last with ``output.finished`` and the token counts (or, if
    generation failed after the stream started, with ``error`` set). Raises the ``llmengine.errors`` types.
    """
    if call.stream:
        return CompletionStream(_transport.stream_events(call.request("stream")))
    return parse_body(_transport.request(call.request("sync")), CompletionSyncV1Response)


async def _acreate(call: CompletionArguments) -> CompletionSyncV1Response | AsyncCompletionStream:
    """The async twin of ``create``; with ``stream=True`` it returns an ``AsyncCompletionStream``."""
    if call.stream:
        return AsyncCompletionStream(_transport.astream_events(call.request("stream")))
    return parse_body(await _transport.arequest(call.request("sync")), CompletionSyncV1Response)


def _submit(call: CompletionArguments) -> CompletionTask:
    """Queue the completion as an async task and return its handle at once (``timeout`` bounds the submit call).

    Use it for long or bulk jobs: ``task.result(timeout=...)`` waits for the ``CompletionSyncV1Response``.
    """
    created = parse_body(_transport.request(call.request("async")), CreateAsyncTaskV1Response)
    return CompletionTask(created.task_id, request_headers=call.request_headers)


async def _asubmit(call: CompletionArguments) -> AsyncCompletionTask:
    """The async twin of ``submit``: returns an ``AsyncCompletionTask``."""
    created = parse_body(await _transport.arequest(call.request("async")), CreateAsyncTaskV1Response)
    return AsyncCompletionTask(created.task_id, request_headers=call.request_headers)


_read = CompletionArguments.from_bound


class Completion:
    """Completions from a model endpoint.

    ``create`` and ``acreate`` return the whole completion, or with ``stream=True`` an iterator (async iterator)
    of ``CompletionStreamV1Response`` events as tokens are generated. ``submit`` and ``asubmit`` queue an async
    task and return a handle to poll. ``model`` names the endpoint; ``model_name`` is accepted as an alias.
    ``timeout`` (seconds) bounds the wait for the answer — for streams, the wait for each event.
    The parameters are defined once, in ``llmengine._faces``.
    """

    create: CreateCall[CompletionSyncV1Response, CompletionStream] = public_method(CreateCall, _read, _create)
    acreate: CreateCall[Awaitable[CompletionSyncV1Response], Awaitable[AsyncCompletionStream]] = public_method(
        CreateCall, _read, _acreate
    )
    submit: SubmitCall[CompletionTask] = public_method(SubmitCall, _read, _submit)
    asubmit: SubmitCall[Awaitable[AsyncCompletionTask]] = public_method(SubmitCall, _read, _asubmit)

    # Batch jobs (llmengine/batch_completion.py), same signatures as the published client.
    batch_create = classmethod(_batch.batch_create)
    get_batch_completion = classmethod(_batch.get_batch_completion)
    cancel_batch_completion = classmethod(_batch.cancel_batch_completion)


class _TaskHandle:
    def __init__(self, task_id: str, *, request_headers: dict[str, str] | None = None) -> None:
        self.task_id = task_id
        self._request_headers = request_headers
        # Once final, a task's state never changes: keep it instead of asking again (results expire server-side).
        self._final: GetAsyncTaskV1Response | None = None

    def __repr__(self) -> str:
        state = self._final.status.value if self._final else "unknown"
        return f"{type(self).__name__}(task_id={self.task_id!r}, last_seen={state})"

    def _remember(self, info: GetAsyncTaskV1Response) -> GetAsyncTaskV1Response:
        if info.status.is_final:
            self._final = info
        return info


class _ResultWait:
    """Waiting for a task's result, shared by both faces: polling with backoff until done or out of time."""

    def __init__(self, task_id: str, timeout: float | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.started = time.monotonic()
        self.intervals = poll_intervals()

    def after(self, info: GetAsyncTaskV1Response) -> CompletionSyncV1Response | float:
        """The completion if ``info`` has it (raising ``TaskFailedError`` on failure), else seconds until next poll."""
        completion = completion_from_task(info)
        if completion is not None:
            return completion
        waited = time.monotonic() - self.started
        if self.timeout is not None and waited >= self.timeout:
            raise TaskTimeoutError(self.task_id, waited, info.status.value)
        interval = next(self.intervals)
        return interval if self.timeout is None else min(interval, self.timeout - waited)


class CompletionTask(_TaskHandle):
    """An async completion task. Make one from ``Completion.submit`` or from a stored id: ``CompletionTask(id)``."""

    def get(self, timeout: float = DEFAULT_TIMEOUT) -> GetAsyncTaskV1Response:
        """The task's current record: status, result (on SUCCESS) and traceback (on FAILURE)."""
        if self._final is not None:
            return self._final
        spec = task_status_request(self.task_id, timeout, self._request_headers)
        return self._remember(parse_body(_transport.request(spec), GetAsyncTaskV1Response))

    def status(self) -> TaskStatus:
        return self.get().status

    def result(self, timeout: float | None = None) -> CompletionSyncV1Response:
        """Wait for the completion, polling with backoff; ``timeout`` None waits as long as it takes.

        Raises ``TaskFailedError`` if the task failed and ``TaskTimeoutError`` if it is not done in time.
        """
        wait = _ResultWait(self.task_id, timeout)
        while True:
            outcome = wait.after(self.get())
            if isinstance(outcome, CompletionSyncV1Response):
                return outcome
            time.sleep(outcome)


class AsyncCompletionTask(_TaskHandle):
    """The async twin of ``CompletionTask``: the same methods, awaited."""

    async def get(self, timeout: float = DEFAULT_TIMEOUT) -> GetAsyncTaskV1Response:
        if self._final is not None:
            return self._final
        spec = task_status_request(self.task_id, timeout, self._request_headers)
        return self._remember(parse_body(await _transport.arequest(spec), GetAsyncTaskV1Response))

    async def status(self) -> TaskStatus:
        return (await self.get()).status

    async def result(self, timeout: float | None = None) -> CompletionSyncV1Response:
        wait = _ResultWait(self.task_id, timeout)
        while True:
            outcome = wait.after(await self.get())
            if isinstance(outcome, CompletionSyncV1Response):
                return outcome
            await asyncio.sleep(outcome)
