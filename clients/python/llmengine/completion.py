"""Completions: ``Completion.create`` / ``acreate`` (sync or streamed) and ``submit`` / ``asubmit`` (async tasks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal, overload

from llmengine import _transport
from llmengine import batch_completion as _batch
from llmengine._constants import COMPLETION_TIMEOUT, DEFAULT_TIMEOUT
from llmengine._core.request_specs import completion_body, completion_request, resolve_model, task_status_request
from llmengine._core.responses import completion_from_task, parse_body
from llmengine._core.retry import poll_intervals
from llmengine.data_types import (
    CompletionSyncV1Response,
    CreateAsyncTaskV1Response,
    GetAsyncTaskV1Response,
    TaskStatus,
)
from llmengine.errors import TaskTimeoutError, ValidationError
from llmengine.streaming import AsyncCompletionStream, CompletionStream

# The arguments of create/acreate/submit that make up the request body (the rest say where and how to send it).
_BODY_FIELDS = (
    "prompt",
    "max_new_tokens",
    "temperature",
    "stop_sequences",
    "return_token_log_probs",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
    "top_p",
    "include_stop_str_in_output",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
)


def _body(arguments: dict[str, Any]) -> dict[str, Any]:
    """The validated request body from a public method's arguments (its ``locals()`` on entry)."""
    if arguments["prompt"] is None:
        raise ValidationError("prompt is required")
    fields = {name: arguments[name] for name in _BODY_FIELDS}
    fields.update(arguments["kwargs"])
    return completion_body(fields)


class Completion:
    """Completions from a model endpoint.

    ``create`` and ``acreate`` return the whole completion, or with ``stream=True`` an iterator (async iterator)
    of ``CompletionStreamV1Response`` events as tokens are generated. ``submit`` and ``asubmit`` queue an async
    task and return a handle to poll. ``model`` names the endpoint; ``model_name`` is accepted as an alias.
    ``timeout`` (seconds) bounds the wait for the answer — for streams, the wait for each event.
    """

    @overload
    @classmethod
    def create(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: Literal[False] = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response: ...

    @overload
    @classmethod
    def create(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        *,
        stream: Literal[True],
        request_headers: dict[str, str] | None = None,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionStream: ...

    @overload
    @classmethod
    def create(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response | CompletionStream: ...

    @classmethod
    def create(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response | CompletionStream:
        """A completion of ``prompt`` from the endpoint ``model``.

        Returns a ``CompletionSyncV1Response``; with ``stream=True`` a ``CompletionStream`` yielding
        ``CompletionStreamV1Response`` events, the last with ``output.finished`` and the token counts (or, if
        generation failed after the stream started, with ``error`` set). Raises the ``llmengine.errors`` types.
        """
        body = _body(locals())
        name = resolve_model(model, model_name)
        if stream:
            spec = completion_request("stream", name, body, timeout, request_headers)
            return CompletionStream(_transport.stream_events(spec))
        spec = completion_request("sync", name, body, timeout, request_headers)
        return parse_body(_transport.request(spec), CompletionSyncV1Response)

    @overload
    @classmethod
    async def acreate(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: Literal[False] = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response: ...

    @overload
    @classmethod
    async def acreate(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        *,
        stream: Literal[True],
        request_headers: dict[str, str] | None = None,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> AsyncCompletionStream: ...

    @overload
    @classmethod
    async def acreate(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response | AsyncCompletionStream: ...

    @classmethod
    async def acreate(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionSyncV1Response | AsyncCompletionStream:
        """The async twin of ``create``; with ``stream=True`` it returns an ``AsyncCompletionStream``."""
        body = _body(locals())
        name = resolve_model(model, model_name)
        if stream:
            spec = completion_request("stream", name, body, timeout, request_headers)
            return AsyncCompletionStream(_transport.astream_events(spec))
        spec = completion_request("sync", name, body, timeout, request_headers)
        return parse_body(await _transport.arequest(spec), CompletionSyncV1Response)

    @classmethod
    def submit(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> CompletionTask:
        """Queue the completion as an async task and return its handle at once (``timeout`` bounds the submit call).

        Use it for long or bulk jobs: ``task.result(timeout=...)`` waits for the ``CompletionSyncV1Response``.
        """
        body = _body(locals())
        name = resolve_model(model, model_name)
        spec = completion_request("async", name, body, timeout, request_headers)
        created = parse_body(_transport.request(spec), CreateAsyncTaskV1Response)
        return CompletionTask(created.task_id, request_headers=request_headers)

    @classmethod
    async def asubmit(
        cls,
        model: str | None = None,
        prompt: str | None = None,
        max_new_tokens: int = 20,
        temperature: float = 0.2,
        stop_sequences: list[str] | None = None,
        return_token_log_probs: bool | None = False,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        include_stop_str_in_output: bool | None = None,
        guided_json: dict[str, Any] | None = None,
        guided_regex: str | None = None,
        guided_choice: list[str] | None = None,
        guided_grammar: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> AsyncCompletionTask:
        """The async twin of ``submit``: returns an ``AsyncCompletionTask``."""
        body = _body(locals())
        name = resolve_model(model, model_name)
        spec = completion_request("async", name, body, timeout, request_headers)
        created = parse_body(await _transport.arequest(spec), CreateAsyncTaskV1Response)
        return AsyncCompletionTask(created.task_id, request_headers=request_headers)

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
        started = time.monotonic()
        for interval in poll_intervals():
            info = self.get()
            completion = completion_from_task(info)
            if completion is not None:
                return completion
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise TaskTimeoutError(self.task_id, waited, info.status.value)
            time.sleep(interval if timeout is None else min(interval, timeout - waited))
        raise AssertionError("poll_intervals never ends")  # pragma: no cover


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
        started = time.monotonic()
        for interval in poll_intervals():
            info = await self.get()
            completion = completion_from_task(info)
            if completion is not None:
                return completion
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise TaskTimeoutError(self.task_id, waited, info.status.value)
            await asyncio.sleep(interval if timeout is None else min(interval, timeout - waited))
        raise AssertionError("poll_intervals never ends")  # pragma: no cover
