"""OpenAI's error envelope, ``{"error": {"message", "type", "param", "code"}}``, for every error of the OpenAI routes.

The routes use ``OpenAiRoute`` as their route class: it catches what the handler and its dependencies raise (request
validation, authentication, domain errors, anything unexpected) and answers in the envelope with the status the
``openai`` SDK maps to its typed exceptions. The llm-engine routes keep ``{"detail"}`` (``api/errors.py``); the two
never meet, because this class only wraps the OpenAI routes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException  # FastAPI raises Starlette's own (e.g. a body it cannot parse)

from model_engine_server.api.errors import status_for
from model_engine_server.domain.exceptions import (
    DomainError,
    EndpointDeletingError,
    EndpointNotFoundError,
    EndpointNotReadyError,
    InvalidRequestError,
    RateLimitExceededError,
)

logger = logging.getLogger(__name__)

# status -> (type, code) as OpenAI's API reports them.
_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> Response:
    error_type, default_code = _KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code or default_code}}
    headers = {"WWW-Authenticate": 'Bearer realm="llm-engine"'} if status == 401 else None
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_chunk(status: int, message: str) -> bytes:
    """The in-band error of a stream that already started (OpenAI's SDK raises ``APIError`` on it)."""
    error_type, code = _KINDS.get(status, ("server_error", None))
    error = {"message": message, "type": error_type, "param": None, "code": code or status}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def domain_error_response(exc: DomainError) -> Response:
    status = status_for(exc)
    if isinstance(exc, EndpointNotFoundError):
        message = f"The model {exc.name!r} does not exist or you do not have access to it."
        return openai_error(404, message, param="model", code="model_not_found")
    if isinstance(exc, EndpointDeletingError):
        return openai_error(404, exc.message, param="model", code="model_not_found")
    if isinstance(exc, RateLimitExceededError | EndpointNotReadyError) and exc.retry_after:  # clients back off
        response = openai_error(status, exc.message)
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response
    return openai_error(status, exc.message, param=exc.param if isinstance(exc, InvalidRequestError) else None)


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def _param(loc: Sequence[int | str]) -> str | None:
    """``("body", "messages", 0, "content")`` → ``messages[0].content``; union-member tags are left out."""
    param = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_TAGS:
            param += f".{part}" if param else part
    return param or None


def validation_error_response(exc: RequestValidationError) -> Response:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request."}
    param = _param(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return openai_error(400, "The request body is not valid JSON.")
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return openai_error(400, message, param=param)


class OpenAiRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return validation_error_response(exc)
            except DomainError as exc:
                return domain_error_response(exc)
            except HTTPException as exc:
                return openai_error(exc.status_code, str(exc.detail))
            except Exception:
                logger.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error(500, "Internal server error.")

        return handle
