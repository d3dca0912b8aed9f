"""Every error the SDK raises, in one tree, so callers can catch as broadly or as narrowly as they need.

    LLMEngineError
    ├── ValidationError               arguments rejected before anything was sent (also a ValueError)
    ├── MalformedResponseError        the server answered something the SDK cannot read (also a ValueError)
    ├── APIError                      the gateway answered with an error status; carries status_code and detail
    │   ├── BadRequestError           400, 422
    │   ├── UnauthorizedError         401
    │   ├── NotFoundError             404 (also for objects that exist but belong to someone else)
    │   ├── RateLimitExceededError    429
    │   ├── ServerError               5xx
    │   └── UnknownError              any other status
    │       └── ConflictError         409: the name is taken, or the endpoint is being deleted
    ├── APIConnectionError            no answer: the gateway could not be reached or hung up
    │   └── APITimeoutError           no answer in time (also a TimeoutError)
    └── AsyncTaskError                an async completion task did not produce a result
        ├── TaskFailedError           the task ended in FAILURE; carries the server's traceback
        └── TaskTimeoutError          `result(timeout=...)` gave up waiting (also a TimeoutError)

Names and constructor signatures of the HTTP errors match the published ``scale-llm-engine`` client.
"""

from __future__ import annotations

from typing import Any


class LLMEngineError(Exception):
    """Base of every error raised by the SDK."""


class ValidationError(LLMEngineError, ValueError):
    """Arguments the gateway would reject, caught before sending anything."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedResponseError(LLMEngineError, ValueError):
    """A response body (or stream event) that is not what the wire contract promises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APIError(LLMEngineError):
    """The gateway answered with an error status. ``detail`` is the server's ``detail`` field, as sent."""

    status_code: int = 0

    def __init__(self, message: str, *, status_code: int | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        self.detail: Any = message if detail is None else detail


class BadRequestError(APIError):
    """HTTP 400 or 422: the request's inputs are invalid; retrying without changing them will not help."""

    status_code = 400


class UnauthorizedError(APIError):
    """HTTP 401: no valid API key was sent."""

    status_code = 401


class NotFoundError(APIError):
    """HTTP 404: the object does not exist, or is not visible to this API key."""

    status_code = 404


class RateLimitExceededError(APIError):
    """HTTP 429: too many requests; the SDK already retried with backoff before raising this."""

    status_code = 429


class ServerError(APIError):
    """HTTP 5xx: the gateway or an inference server failed, or the endpoint is not ready (503)."""

    status_code = 500

    def __init__(self, status_code: int, message: str, *, detail: Any = None) -> None:
        super().__init__(f"Server error {status_code}: {message}", status_code=status_code, detail=detail or message)


class UnknownError(APIError):
    """An error status the SDK has no specific class for."""


class ConflictError(UnknownError):
    """HTTP 409: the request conflicts with the current state (name already taken, endpoint being deleted).

    A subclass of ``UnknownError`` because that is what the published client raised for 409.
    """

    status_code = 409


class APIConnectionError(LLMEngineError):
    """The request got no answer: connection refused or reset, DNS failure, or the server hung up mid-response."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class APITimeoutError(APIConnectionError, TimeoutError):
    """No answer within the ``timeout`` given (for streams: no event within it)."""


class AsyncTaskError(LLMEngineError):
    """An async completion task did not produce a result."""

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id


class TaskFailedError(AsyncTaskError):
    """The task ended in FAILURE. ``traceback`` is the worker's explanation, when it sent one."""

    def __init__(self, task_id: str, traceback: str | None) -> None:
        reason = (traceback or "no reason given").strip()
        super().__init__(f"Async task {task_id} failed: {reason}", task_id=task_id)
        self.traceback = traceback


class TaskTimeoutError(AsyncTaskError, TimeoutError):
    """The task did not finish within the time ``result()`` was allowed to wait; it may still finish later."""

    def __init__(self, task_id: str, waited: float, last_status: str) -> None:
        super().__init__(
            f"Async task {task_id} still {last_status} after {waited:.1f}s; call result() again to keep waiting",
            task_id=task_id,
        )
        self.waited = waited
        self.last_status = last_status
