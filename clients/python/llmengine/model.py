"""Model endpoints: create, inspect, list, update and delete the deployments that serve completions."""

from __future__ import annotations

from typing import Any, TypeAlias

from llmengine import _transport
from llmengine._constants import DEFAULT_TIMEOUT
from llmengine._core.request_specs import (
    RequestSpec,
    create_endpoint_request,
    delete_endpoint_request,
    get_endpoint_request,
    hook_names,
    list_endpoints_request,
    update_endpoint_request,
)
from llmengine._core.responses import parse_body
from llmengine.data_types import (
    CreateLLMEndpointResponse,
    DeleteLLMEndpointResponse,
    GetLLMEndpointResponse,
    ListLLMEndpointsResponse,
    LLMInferenceFramework,
    LLMSource,
    ModelEndpointType,
    PostInferenceHooks,
    Quantization,
    UpdateLLMEndpointResponse,
)
from llmengine.job_types import ModelDownloadResponse

# `Model.list` shadows the builtin inside the class body, so annotations there use this alias.
_Hooks: TypeAlias = list[PostInferenceHooks]


def _body_fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """The request body from a method's arguments (its ``locals()`` on entry): ``model`` goes as ``model_name``."""
    fields = {
        ("model_name" if name == "model" else name): value
        for name, value in arguments.items()
        if name not in ("cls", "request_headers", "extra_kwargs")
    }
    fields["post_inference_hooks"] = hook_names(fields["post_inference_hooks"])
    return {**fields, **arguments["extra_kwargs"]}


class Model:
    """Model endpoints. Signatures and defaults match the published ``scale-llm-engine`` client."""

    @classmethod
    def create(
        cls,
        name: str,
        model: str,
        inference_framework_image_tag: str,
        source: LLMSource = LLMSource.HUGGING_FACE,
        inference_framework: LLMInferenceFramework = LLMInferenceFramework.VLLM,
        num_shards: int = 1,
        quantize: Quantization | None = None,
        checkpoint_path: str | None = None,
        max_model_len: int | None = None,
        cpus: int | None = None,
        memory: str | None = None,
        storage: str | None = None,
        gpus: int | None = None,
        nodes_per_worker: int = 1,
        min_workers: int = 0,
        max_workers: int = 1,
        per_worker: int = 2,
        endpoint_type: ModelEndpointType = ModelEndpointType.STREAMING,
        gpu_type: str | None = None,
        high_priority: bool | None = False,
        post_inference_hooks: _Hooks | None = None,
        default_callback_url: str | None = None,
        public_inference: bool | None = True,
        labels: dict[str, str] | None = None,
        request_headers: dict[str, str] | None = None,
        **extra_kwargs: Any,
    ) -> CreateLLMEndpointResponse:
        """Create the endpoint ``name`` serving ``model`` (a model-zoo name); it starts as ``UPDATE_PENDING``.

        Poll ``Model.get(name).status`` until ``READY`` (or ``UPDATE_FAILED``, with ``spec.status_reason``).
        Hardware left as None is filled in by the gateway from the model zoo.
        """
        fields = _body_fields(locals())
        fields["labels"] = labels or {}
        spec = create_endpoint_request(fields, DEFAULT_TIMEOUT, request_headers)
        return parse_body(_transport.request(spec), CreateLLMEndpointResponse)

    @classmethod
    def get(cls, model: str, request_headers: dict[str, str] | None = None) -> GetLLMEndpointResponse:
        """The endpoint named ``model``: its status, framework and (``spec``) deployment and hardware."""
        spec = get_endpoint_request(model, DEFAULT_TIMEOUT, request_headers)
        return parse_body(_transport.request(spec), GetLLMEndpointResponse)

    @classmethod
    def list(cls, request_headers: dict[str, str] | None = None) -> ListLLMEndpointsResponse:
        """Every endpoint this API key can use."""
        spec = list_endpoints_request(DEFAULT_TIMEOUT, request_headers)
        return parse_body(_transport.request(spec), ListLLMEndpointsResponse)

    @classmethod
    def update(
        cls,
        name: str,
        model: str | None = None,
        inference_framework_image_tag: str | None = None,
        source: LLMSource | None = None,
        num_shards: int | None = None,
        quantize: Quantization | None = None,
        checkpoint_path: str | None = None,
        cpus: int | None = None,
        memory: str | None = None,
        storage: str | None = None,
        gpus: int | None = None,
        min_workers: int | None = None,
        max_workers: int | None = None,
        per_worker: int | None = None,
        endpoint_type: ModelEndpointType | None = None,
        gpu_type: str | None = None,
        high_priority: bool | None = None,
        post_inference_hooks: _Hooks | None = None,
        default_callback_url: str | None = None,
        public_inference: bool | None = None,
        labels: dict[str, str] | None = None,
        request_headers: dict[str, str] | None = None,
        **extra_kwargs: Any,
    ) -> UpdateLLMEndpointResponse:
        """Change the given fields of endpoint ``name`` (None leaves a field as it is); servers roll over."""
        fields = _body_fields(locals())
        del fields["name"]  # it names the endpoint in the URL
        spec = update_endpoint_request(name, fields, DEFAULT_TIMEOUT, request_headers)
        return parse_body(_transport.request(spec), UpdateLLMEndpointResponse)

    @classmethod
    def delete(
        cls, model_endpoint_name: str, request_headers: dict[str, str] | None = None
    ) -> DeleteLLMEndpointResponse:
        """Delete the endpoint and stop its servers; ``deleted`` is True once the gateway accepted it."""
        spec = delete_endpoint_request(model_endpoint_name, DEFAULT_TIMEOUT, request_headers)
        return parse_body(_transport.request(spec), DeleteLLMEndpointResponse)

    @classmethod
    def download(cls, model_name: str, download_format: str = "hugging_face") -> ModelDownloadResponse:
        """Expiring URLs of a fine-tuned model's files (``{file name: url}``), readable without credentials."""
        body = {"model_name": model_name, "download_format": download_format}
        spec = RequestSpec("POST", "v1/llm/model-endpoints/download", DEFAULT_TIMEOUT, json=body)
        return parse_body(_transport.request(spec), ModelDownloadResponse)
