"""The one place domain errors become HTTP responses: ``{"detail": message}`` with the matching status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model_engine_server.domain import exceptions as errors

logger = logging.getLogger(__name__)

# Most specific first: the first class the error is an instance of decides the status.
STATUS_BY_ERROR: tuple[tuple[type[errors.DomainError], int], ...] = (
    (errors.InvalidRequestError, 400),
    (errors.AuthenticationError, 401),
    (errors.NotFoundError, 404),
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
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(Exception, _unexpected_error)
