"""Building requests without sending them: what to call, with which body, and whether it is safe to repeat.

Arguments are validated here with the request models, so a bad temperature fails before any network I/O with a
``ValidationError`` naming the field.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin

import pydantic

from llmengine.data_types import (
    CompletionSyncV1Request,
    CreateLLMEndpointRequest,
    PostInferenceHooks,
    UpdateLLMEndpointRequest,
)
from llmengine.errors import ValidationError

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

MODEL_ENDPOINTS_PATH = "v1/llm/model-endpoints"
COMPLETIONS_SYNC_PATH = "v1/llm/completions-sync"
COMPLETIONS_STREAM_PATH = "v1/llm/completions-stream"
COMPLETIONS_ASYNC_PATH = "v1/llm/completions-async"
ASYNC_TASKS_PATH = "v1/async-tasks"


@dataclass(frozen=True)
class RequestSpec:
    """One HTTP request, relative to the configured base path."""

    method: str
    path: str
    timeout: float
    params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice is harmless, so a request that may have reached the server can be repeated."""
        return self.method in _IDEMPOTENT_METHODS


def build_url(base_path: str, path: str) -> str:
    # urljoin drops the last segment of a base without a trailing slash ("…/llm-engine" + "v1/…" loses it).
    return urljoin(base_path if base_path.endswith("/") else base_path + "/", path)


def auth_headers(api_key: str) -> dict[str, str]:
    """The key both ways the wire contract allows: HTTP Basic username (empty password) and ``x-api-key``."""
    basic = base64.b64encode(f"{api_key}:".encode()).decode("ascii")
    return {"authorization": f"Basic {basic}", "x-api-key": api_key}


def resolve_model(model: str | None, model_name: str | None) -> str:
    """``model_name`` is accepted as an alias of ``model``; exactly one name must come out."""
    if model is not None and model_name is not None and model != model_name:
        raise ValidationError(f"model={model!r} and model_name={model_name!r} disagree; pass only one of them")
    name = model if model is not None else model_name
    if not name:
        raise ValidationError("a model endpoint name is required: pass model= (or its alias model_name=)")
    return name


def _validated(model: type[pydantic.BaseModel], fields: dict[str, Any]) -> dict[str, Any]:
    try:
        request = model.model_validate(fields)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ValidationError(f"invalid {model.__name__}: {problems}") from None
    # None means "not given": the gateway applies its own default rather than receiving an explicit null.
    return request.model_dump(mode="json", exclude_none=True)


def completion_body(fields: dict[str, Any]) -> dict[str, Any]:
    return _validated(CompletionSyncV1Request, fields)


def completion_request(
    kind: str, model: str, body: dict[str, Any], timeout: float, headers: Mapping[str, str] | None
) -> RequestSpec:
    """``kind`` is ``sync``, ``stream`` or ``async``; all three take the same body."""
    path = {"sync": COMPLETIONS_SYNC_PATH, "stream": COMPLETIONS_STREAM_PATH, "async": COMPLETIONS_ASYNC_PATH}[kind]
    return RequestSpec(
        "POST", path, timeout, params={"model_endpoint_name": model}, json=body, headers=dict(headers or {})
    )


def task_status_request(task_id: str, timeout: float, headers: Mapping[str, str] | None) -> RequestSpec:
    return RequestSpec("GET", f"{ASYNC_TASKS_PATH}/{quote(task_id, safe='')}", timeout, headers=dict(headers or {}))


def hook_names(hooks: list[PostInferenceHooks] | list[str] | None) -> list[str] | None:
    if hooks is None:
        return None
    return [hook.value if isinstance(hook, PostInferenceHooks) else str(hook) for hook in hooks]


def create_endpoint_request(fields: dict[str, Any], timeout: float, headers: Mapping[str, str] | None) -> RequestSpec:
    body = _validated(CreateLLMEndpointRequest, fields)
    return RequestSpec("POST", MODEL_ENDPOINTS_PATH, timeout, json=body, headers=dict(headers or {}))


def update_endpoint_request(
    name: str, fields: dict[str, Any], timeout: float, headers: Mapping[str, str] | None
) -> RequestSpec:
    body = _validated(UpdateLLMEndpointRequest, fields)
    return RequestSpec("PUT", _endpoint_path(name), timeout, json=body, headers=dict(headers or {}))


def get_endpoint_request(name: str, timeout: float, headers: Mapping[str, str] | None) -> RequestSpec:
    return RequestSpec("GET", _endpoint_path(name), timeout, headers=dict(headers or {}))


def list_endpoints_request(timeout: float, headers: Mapping[str, str] | None) -> RequestSpec:
    return RequestSpec("GET", MODEL_ENDPOINTS_PATH, timeout, headers=dict(headers or {}))


def delete_endpoint_request(name: str, timeout: float, headers: Mapping[str, str] | None) -> RequestSpec:
    return RequestSpec("DELETE", _endpoint_path(name), timeout, headers=dict(headers or {}))


def _endpoint_path(name: str) -> str:
    if not name:
        raise ValidationError("a model endpoint name is required")
    # Quote everything: a name containing "/" or "?" must not turn into another route.
    return f"{MODEL_ENDPOINTS_PATH}/{quote(name, safe='')}"
