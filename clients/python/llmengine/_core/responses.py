"""Reading what the gateway sent, without I/O: success bodies into models, error bodies into typed errors."""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, TypeVar

import pydantic

from llmengine.data_types import (
    CompletionStreamV1Response,
    CompletionSyncV1Response,
    GetAsyncTaskV1Response,
    TaskStatus,
)
from llmengine.errors import (
    APIError,
    BadRequestError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    TaskFailedError,
    UnauthorizedError,
    UnknownError,
)

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_MAX_RAW_ERROR_CHARS = 500


def error_from_response(status_code: int, content: bytes) -> APIError:
    """The typed error for an error status, carrying the server's ``detail`` (or the raw body if it sent none)."""
    detail = _detail(content)
    message = format_detail(detail)
    if status_code in (400, 422):
        return BadRequestError(message, status_code=status_code, detail=detail)
    if status_code == 401:
        return UnauthorizedError(message, status_code=status_code, detail=detail)
    if status_code == 404:
        return NotFoundError(message, status_code=status_code, detail=detail)
    if status_code == 409:
        return ConflictError(message, status_code=status_code, detail=detail)
    if status_code == 429:
        return RateLimitExceededError(message, status_code=status_code, detail=detail)
    if 500 <= status_code < 600:
        return ServerError(status_code, message, detail=detail)
    return UnknownError(f"HTTP {status_code}: {message}", status_code=status_code, detail=detail)


def _detail(content: bytes) -> Any:
    try:
        payload = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", errors="replace").strip()
        return text[:_MAX_RAW_ERROR_CHARS] or "(empty response body)"
    if isinstance(payload, dict) and "detail" in payload:
        return payload["detail"]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict) and "message" in payload["error"]:
        return payload["error"]["message"]  # OpenAI's envelope, from the OpenAI-compatible routes
    return payload


def format_detail(detail: Any) -> str:
    """A one-line message from a ``detail``: strings as they are, FastAPI's validation lists as ``field: problem``."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and all(isinstance(item, dict) and "msg" in item for item in detail):
        return "; ".join(_format_validation_item(item) for item in detail)
    return json.dumps(detail)


def _format_validation_item(item: dict[str, Any]) -> str:
    location = [str(part) for part in item.get("loc", [])]
    # "body" / "query" prefixes say where, not what; the field name is what a user can act on.
    if location and location[0] in ("body", "query", "path"):
        location = location[1:]
    return f"{'.'.join(location)}: {item['msg']}" if location else str(item["msg"])


def parse_body(content: bytes, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(content)
    except pydantic.ValidationError as exc:
        raise MalformedResponseError(f"unexpected {model.__name__} from the gateway: {exc}") from None


def parse_stream_event(data: str) -> CompletionStreamV1Response:
    """One SSE ``data:`` payload. In-band errors come back as an event with ``error`` set, like any other."""
    try:
        return CompletionStreamV1Response.model_validate_json(data)
    except pydantic.ValidationError as exc:
        raise MalformedResponseError(f"invalid stream event {data[:200]!r}: {exc}") from None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def completion_from_task(task: GetAsyncTaskV1Response) -> CompletionSyncV1Response | None:
    """The completion of a finished task, None while it is still running; FAILURE raises ``TaskFailedError``."""
    if task.status is TaskStatus.FAILURE:
        raise TaskFailedError(task.task_id, task.traceback)
    if task.status is not TaskStatus.SUCCESS:
        return None
    try:
        return CompletionSyncV1Response.model_validate(task.result)
    except pydantic.ValidationError as exc:
        raise MalformedResponseError(f"async task {task.task_id} succeeded with an unreadable result: {exc}") from None
