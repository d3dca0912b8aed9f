"""The OpenAPI document, completed once for every route: the error answers each kind of route can give (with the
``{"detail"}`` schema, or OpenAI's ``{"error"}`` envelope on the routes of ``OpenAiRoute``), and how callers
authenticate. Applied at app creation, so routes added later are covered without edits of their own."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts

from model_engine_server.api.deps import get_caller, get_principal
from model_engine_server.api.openai_errors import OpenAiRoute

ERROR_SCHEMA = "ErrorDetail"
OPENAI_ERROR_SCHEMA = "OpenAiError"
SCHEMAS: dict[str, Any] = {
    ERROR_SCHEMA: {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]},
    OPENAI_ERROR_SCHEMA: {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
                "required": ["message", "type"],
            }
        },
        "required": ["error"],
    },
}
SECURITY_SCHEMES = {
    "apiKeyBasic": {
        "type": "http",
        "scheme": "basic",
        "description": "The API key as the HTTP Basic username, with an empty password.",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "x-api-key"},
}
REASONS = {
    400: "Invalid value or shape; `detail` names the field and the reason.",
    401: "Missing, unknown or revoked API key.",
    403: "The key may not do this (an admin key is needed); `detail` says what.",
    404: "Not found, or not yours.",
    408: "The request body was not received within the configured timeout.",
    409: "The name exists already, or the endpoint is being deleted.",
    413: "The request body is over the configured limit.",
    414: "The query string is over the configured limit.",
    429: "Over a limit of the caller's tenant (requests per minute, tokens, quotas) or overloaded; see Retry-After.",
    431: "The request headers are over the configured limit.",
    502: "The inference server failed or answered with something unexpected.",
    503: "Not ready, or the database or task broker is unreachable; `detail` says which.",
    504: "The inference server did not answer in time.",
}


def _statuses(has_body: bool, methods: set[str], authenticated: bool, admin_checked: bool) -> set[int]:
    """What a route of this kind can answer besides success. Every request passes the request limits first
    (``api/limits.py``: 400 for a repeated query parameter or a bad Content-Length, 414, 431; with a body 408 and
    413). Every authenticated route authenticates, counts the request against its tenant's rate (429), looks up
    and reads the registry; routes that check the key's scope can refuse (403); writes can conflict; POSTs run work
    that can be refused upstream."""
    statuses = {400, 414, 431}
    if has_body:
        statuses |= {408, 413}
    if authenticated:
        statuses |= {401, 404, 429, 503}
    if admin_checked:
        statuses.add(403)
    if methods & {"POST", "PUT", "PATCH", "DELETE"}:
        statuses.add(409)
    if "POST" in methods:
        statuses |= {502, 504}
    return statuses


def _calls(dependant: Dependant, function: object) -> bool:
    return dependant.call is function or any(_calls(d, function) for d in dependant.dependencies)


def _complete_operation(operation: dict[str, Any], route: APIRoute, methods: set[str]) -> None:
    authenticated = any(_calls(route.dependant, dependency) for dependency in (get_caller, get_principal))
    admin_checked = _calls(route.dependant, get_principal)
    if authenticated:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # invalid input is a 400 (errors.py, openai_errors.py)
    schema = OPENAI_ERROR_SCHEMA if isinstance(route, OpenAiRoute) else ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    has_body = "requestBody" in operation  # a model, or a body read by hand (file uploads) declared by the route
    for status in sorted(_statuses(has_body, methods, authenticated, admin_checked)):
        # A route may describe a status itself (its own words); the error schema is always the envelope's.
        responses.setdefault(str(status), {"description": REASONS[status]}).setdefault("content", error)


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that completes FastAPI's document as described above (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
            for context in iter_route_contexts(app.routes):
                route, path, methods = context.original_route, context.path_format, context.methods or set()
                if isinstance(route, APIRoute) and path is not None:
                    for method in methods:
                        operation = document["paths"].get(path, {}).get(method.lower())
                        if operation is not None:
                            _complete_operation(operation, route, methods)
            # FastAPI's 422 schemas: nothing refers to them once every 422 is gone.
            for unused in ("HTTPValidationError", "ValidationError"):
                components["schemas"].pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
