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
    404: "Not found, or not yours.",
    409: "The name exists already, or the endpoint is being deleted.",
    413: "The request body is over the configured limit.",
    429: "Overloaded; retry later.",
    502: "The inference server failed or answered with something unexpected.",
    503: "Not ready, or the database or task broker is unreachable; `detail` says which.",
    504: "The inference server did not answer in time.",
}


def _statuses(route: APIRoute, methods: set[str], authenticated: bool) -> set[int]:
    """What a route of this kind can answer besides success: every authenticated route validates, looks up and
    reads the registry; a body can be too large; writes can conflict; POSTs run work that can be refused upstream."""
    statuses = {400} if _has_inputs(route) else set()
    if authenticated:
        statuses |= {401, 404, 503}
    if route.body_field is not None:
        statuses.add(413)
    if methods & {"POST", "PUT", "PATCH", "DELETE"}:
        statuses.add(409)
    if "POST" in methods:
        statuses |= {429, 502, 504}
    return statuses


def _has_inputs(route: APIRoute) -> bool:
    return bool(route.dependant.query_params or route.dependant.path_params or route.body_field is not None)


def _calls(dependant: Dependant, function: object) -> bool:
    return dependant.call is function or any(_calls(d, function) for d in dependant.dependencies)


def _complete_operation(operation: dict[str, Any], route: APIRoute, methods: set[str]) -> None:
    authenticated = any(_calls(route.dependant, dependency) for dependency in (get_caller, get_principal))
    if authenticated:
        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # invalid input is a 400 (errors.py, openai_errors.py)
    schema = OPENAI_ERROR_SCHEMA if isinstance(route, OpenAiRoute) else ERROR_SCHEMA
    error = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    # Health and metrics (no inputs, no key) answer only as they declare themselves.
    for status in sorted(_statuses(route, methods, authenticated)):
        responses.setdefault(str(status), {"description": REASONS[status], "content": error})


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
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
