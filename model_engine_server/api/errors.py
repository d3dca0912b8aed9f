"""The one place errors become HTTP responses on the llm-engine routes: ``{"detail": message}`` with the matching
status. Invalid values and shapes are a 400 naming the field and the reason (the published client maps only 400,
401, 404, 429 and 5xx to typed errors, so a 422 would reach its users as an unknown error)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sqlalchemy_errors
from starlette.exceptions import HTTPException

from model_engine_server.domain import exceptions as errors

logger = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of decides the status.
STATUS_BY_ERROR: tuple[tuple[type[errors.DomainError], int], ...] = (
    (errors.InvalidRequestError, 400),
    (errors.AuthenticationError, 401),
    (errors.ForbiddenError, 403),
    (errors.NotFoundError, 404),
    (errors.RequestTimeoutError, 408),
    (errors.ConflictError, 409),
    (errors.PayloadTooLargeError, 413),
    (errors.OverloadedError, 429),
    (errors.EndpointNotReadyError, 503),
    (errors.BrokerUnavailableError, 503),
    (errors.PermissionDeniedError, 503),
    (errors.OrchestrationError, 503),
)


def status_for(error: errors.DomainError) -> int:
    if isinstance(error, errors.UpstreamError):
        return error.status_code
    return next((status for kind, status in STATUS_BY_ERROR if isinstance(error, kind)), 500)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": 'Basic realm="llm-engine"'} if status == 401 else None
    if isinstance(exc, errors.RateLimitExceededError | errors.EndpointNotReadyError) and exc.retry_after:
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def _field(location: Sequence[Any]) -> str:
    """``("body", "labels", "team")`` -> ``labels.team``; query and path parameters keep their kind in front."""
    where, *rest = [str(part) for part in location] or ["body"]
    if where == "body":
        return ".".join(rest) or "body"
    return f"{where} parameter {'.'.join(rest)}"


def validation_detail(exc: RequestValidationError) -> str:
    """Every problem as ``field: reason`` joined by ``; ``, e.g. ``max_new_tokens: Input should be greater than 0``."""
    problems = [f"{_field(error.get('loc', ()))}: {error.get('msg', 'invalid value')}" for error in exc.errors()]
    return "; ".join(problems) or "The request is not valid."


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc)}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 405 names only the first route on the path in ``Allow``; list the methods of every route on it."""
    assert isinstance(exc, HTTPException)
    if exc.status_code != 405:
        return await http_exception_handler(request, exc)
    literal: set[str] = set()  # a path without parameters names its own resource (OpenAPI: it wins over templates)
    templated: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.scope["path"]):
            (templated if "{" in getattr(route, "path", "{") else literal).update(route.methods or set())
    headers = {"Allow": ", ".join(sorted(literal or templated))}
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)


# What an unreachable registry raises: the driver's connection errors (asyncpg raises OSError when it cannot connect)
# and SQLAlchemy's wrappers of them. The request changed nothing: a transaction that cannot reach the database
# does not commit.
UNREACHABLE_DATABASE = (
    OSError,
    sqlalchemy_errors.OperationalError,
    sqlalchemy_errors.InterfaceError,
    sqlalchemy_errors.TimeoutError,
)


async def _unreachable_database(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s %s: the registry database is unreachable: %r", request.method, request.url.path, exc)
    detail = f"The registry database is unreachable ({type(exc).__name__}); nothing was changed. Retry in a moment."
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    for unreachable in UNREACHABLE_DATABASE:
        app.add_exception_handler(unreachable, _unreachable_database)
    app.add_exception_handler(Exception, _unexpected_error)
