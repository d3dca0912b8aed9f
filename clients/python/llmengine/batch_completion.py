"""Batch completions: run a model over a whole data set as a job (``Completion.batch_create`` and friends)."""

from __future__ import annotations

from typing import Any

from llmengine import _transport
from llmengine._core.request_specs import RequestSpec
from llmengine._core.responses import parse_body
from llmengine.job_types import (
    BatchCompletionContent,
    BatchCompletionsJob,
    CreateBatchCompletionsModelConfig,
    CreateBatchCompletionsV1Response,
    ToolConfig,
)

BATCH_TIMEOUT = 60  # seconds: submitting reads and checks the whole input


def batch_create(
    cls: type[Any],  # noqa: ARG001 (bound as a classmethod of Completion)
    /,
    output_data_path: str,
    model_config: CreateBatchCompletionsModelConfig,
    content: BatchCompletionContent | None = None,
    input_data_path: str | None = None,
    data_parallelism: int = 1,
    max_runtime_sec: int = 24 * 3600,
    labels: dict[str, str] | None = None,
    priority: str | None = None,
    use_v2: bool = False,
    tool_config: ToolConfig | None = None,
    cpus: int | float | str | None = None,
    gpus: int | None = None,
    memory: str | None = None,
    gpu_type: str | None = None,
    storage: str | None = None,
    request_headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> CreateBatchCompletionsV1Response | BatchCompletionsJob:
    """Start a batch job over ``content`` or the file at ``input_data_path`` (a file id, ``s3://`` or ``file://``);
    results go to ``output_data_path``. v1 answers ``{"job_id"}``, v2 the whole job."""
    body: dict[str, Any] = {
        "model_config": model_config.model_dump(by_alias=True),
        "content": content if content is None or isinstance(content, list) else content.model_dump(),
        "input_data_path": input_data_path,
        "output_data_path": output_data_path,
        "data_parallelism": data_parallelism,
        "max_runtime_sec": max_runtime_sec,
        "tool_config": tool_config.model_dump() if tool_config else None,
    }
    if use_v2:
        body.update(
            labels=labels or getattr(model_config, "labels", {}),
            priority=priority,
            cpus=cpus,
            gpus=gpus,
            memory=memory,
            gpu_type=gpu_type,
            storage=storage,
            **kwargs,
        )
    path = "v2/batch-completions" if use_v2 else "v1/llm/batch-completions"
    spec = RequestSpec("POST", path, BATCH_TIMEOUT, json=body, headers=request_headers or {})
    answer = _transport.request(spec)
    if use_v2:
        return parse_body(answer, BatchCompletionsJob)
    return parse_body(answer, CreateBatchCompletionsV1Response)


def get_batch_completion(
    cls: type[Any],  # noqa: ARG001
    /,
    job_id: str,
    request_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"job": {...}}`` with status and ``progress: {"done", "total"}``."""
    spec = RequestSpec("GET", f"v2/batch-completions/{job_id}", BATCH_TIMEOUT, headers=request_headers or {})
    return _json(_transport.request(spec))


def cancel_batch_completion(
    cls: type[Any],  # noqa: ARG001
    /,
    job_id: str,
    request_headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``{"success": true}`` when the job was stopped; false when it had already finished."""
    path = f"v2/batch-completions/{job_id}/actions/cancel"
    return _json(_transport.request(RequestSpec("POST", path, BATCH_TIMEOUT, json={}, headers=request_headers or {})))


def _json(content: bytes) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(content)
    return value
