"""Request and response models of the LLM Engine REST API (pydantic v2).

Names, fields and enum values follow the published ``scale-llm-engine`` client, so code written against it keeps
working. Responses ignore fields they do not know (the gateway may add some); requests pass unknown keyword
arguments through to the gateway, which ignores what it does not understand.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Self, TypeAlias

import pydantic
from pydantic import ConfigDict, Field, HttpUrl

IncEx: TypeAlias = set[int] | set[str] | dict[int, Any] | dict[str, Any]


class BaseModel(pydantic.BaseModel):
    """pydantic v2 model that also answers the v1 methods the published client's users call (without warnings)."""

    # `model_name` is a field of the API; pydantic would otherwise warn that it shadows its `model_` namespace.
    model_config = ConfigDict(protected_namespaces=(), extra="ignore")

    def json(  # type: ignore[override]
        self,
        *,
        include: IncEx | None = None,
        exclude: IncEx | None = None,
        by_alias: bool = False,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        encoder: Callable[[Any], Any] | None = None,
        models_as_dict: bool = True,
        **dumps_kwargs: Any,
    ) -> str:
        """The model as a JSON string; extra keyword arguments go to ``json.dumps`` (e.g. ``indent=2``)."""
        del encoder, models_as_dict  # v1-only knobs; values are already JSON-ready in mode="json"
        data = self.model_dump(
            mode="json",
            include=include,
            exclude=exclude,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
        )
        return json.dumps(data, **dumps_kwargs)

    def dict(  # type: ignore[override]
        self,
        *,
        include: IncEx | None = None,
        exclude: IncEx | None = None,
        by_alias: bool = False,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        return self.model_dump(
            include=include,
            exclude=exclude,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
        )

    @classmethod
    def parse_obj(cls, obj: Any) -> Self:
        return cls.model_validate(obj)


class _Request(BaseModel):
    # Extra keyword arguments are forwarded to the gateway (forward compatibility with newer servers).
    model_config = ConfigDict(protected_namespaces=(), extra="allow")


# --- enums -------------------------------------------------------------------------------------------------------


class LLMInferenceFramework(StrEnum):
    DEEPSPEED = "deepspeed"
    TEXT_GENERATION_INFERENCE = "text_generation_inference"
    VLLM = "vllm"
    LIGHTLLM = "lightllm"
    TENSORRT_LLM = "tensorrt_llm"


class LLMSource(StrEnum):
    HUGGING_FACE = "hugging_face"


class Quantization(StrEnum):
    BITSANDBYTES = "bitsandbytes"
    AWQ = "awq"


class GpuType(StrEnum):
    NVIDIA_TESLA_T4 = "nvidia-tesla-t4"
    NVIDIA_AMPERE_A10 = "nvidia-ampere-a10"
    NVIDIA_AMPERE_A100 = "nvidia-ampere-a100"
    NVIDIA_AMPERE_A100E = "nvidia-ampere-a100e"
    NVIDIA_HOPPER_H100 = "nvidia-hopper-h100"
    NVIDIA_HOPPER_H100_1G_20GB = "nvidia-hopper-h100-1g20gb"
    NVIDIA_HOPPER_H100_3G_40GB = "nvidia-hopper-h100-3g40gb"


class ModelEndpointType(StrEnum):
    STREAMING = "streaming"
    SYNC = "sync"
    ASYNC = "async"


class ModelEndpointStatus(StrEnum):
    READY = "READY"
    UPDATE_PENDING = "UPDATE_PENDING"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_FAILED = "UPDATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"


class PostInferenceHooks(StrEnum):
    CALLBACK = "callback"


class TaskStatus(StrEnum):
    """States of an async completion task. Only SUCCESS and FAILURE are final."""

    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    UNDEFINED = "UNDEFINED"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE)


CpuSpecificationType: TypeAlias = str | int | float
StorageSpecificationType: TypeAlias = str | int | float


# --- model endpoints ---------------------------------------------------------------------------------------------


class CreateLLMEndpointRequest(_Request):
    name: str
    model_name: str
    source: LLMSource = LLMSource.HUGGING_FACE
    inference_framework: LLMInferenceFramework = LLMInferenceFramework.VLLM
    inference_framework_image_tag: str = "latest"
    num_shards: int = Field(default=1, ge=1)
    quantize: Quantization | None = None
    checkpoint_path: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    post_inference_hooks: list[str] | None = None
    endpoint_type: ModelEndpointType = ModelEndpointType.STREAMING
    cpus: CpuSpecificationType | None = None
    gpus: int | None = Field(default=None, ge=0)
    memory: StorageSpecificationType | None = None
    gpu_type: GpuType | None = None
    storage: StorageSpecificationType | None = None
    nodes_per_worker: int | None = Field(default=None, ge=1)
    min_workers: int = Field(ge=0)
    max_workers: int = Field(ge=0)
    per_worker: int = Field(gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    high_priority: bool | None = None
    default_callback_url: HttpUrl | None = None
    public_inference: bool | None = True


class CreateLLMEndpointResponse(BaseModel):
    endpoint_creation_task_id: str


class ModelEndpointDeploymentState(BaseModel):
    min_workers: int = Field(ge=0)
    max_workers: int = Field(ge=0)
    per_worker: int = Field(gt=0)
    concurrent_requests_per_worker: int | None = None
    available_workers: int | None = Field(default=None, ge=0)
    unavailable_workers: int | None = Field(default=None, ge=0)


class ModelEndpointResourceState(BaseModel):
    cpus: CpuSpecificationType | None = None
    gpus: int = Field(default=0, ge=0)
    memory: StorageSpecificationType | None = None
    gpu_type: GpuType | None = None
    storage: StorageSpecificationType | None = None
    nodes_per_worker: int = Field(default=1, ge=1)
    optimize_costs: bool | None = None


class GetModelEndpointResponse(BaseModel):
    """The endpoint's deployment details (``GetLLMEndpointResponse.spec``)."""

    id: str
    name: str
    endpoint_type: ModelEndpointType
    destination: str | None = None
    deployment_name: str | None = None
    metadata: dict[str, Any] | None = None
    bundle_name: str | None = None
    status: ModelEndpointStatus | None = None
    status_reason: str | None = None
    post_inference_hooks: list[str] | None = None
    default_callback_url: str | None = None
    labels: dict[str, str] | None = None
    created_by: str | None = None
    created_at: datetime.datetime | None = None
    last_updated_at: datetime.datetime | None = None
    deployment_state: ModelEndpointDeploymentState | None = None
    resource_state: ModelEndpointResourceState | None = None
    num_queued_items: int | None = None
    public_inference: bool | None = None
    # Fields of the published model this platform does not use; kept so code reading them still works.
    default_callback_auth: dict[str, Any] | None = None
    aws_role: str | None = None
    results_s3_bucket: str | None = None


class GetLLMEndpointResponse(BaseModel):
    """A model endpoint: use ``name`` in completion requests; ``status`` says whether it can serve them."""

    id: str | None = None
    name: str
    model_name: str | None = None
    source: LLMSource
    status: ModelEndpointStatus
    inference_framework: LLMInferenceFramework
    inference_framework_tag: str | None = None
    inference_framework_image_tag: str | None = None
    num_shards: int | None = None
    quantize: Quantization | None = None
    checkpoint_path: str | None = None
    spec: GetModelEndpointResponse | None = None
    chat_template_override: str | None = None


class ListLLMEndpointsResponse(BaseModel):
    model_endpoints: list[GetLLMEndpointResponse]


class UpdateLLMEndpointRequest(_Request):
    model_name: str | None = None
    source: LLMSource | None = None
    inference_framework_image_tag: str | None = None
    num_shards: int | None = Field(default=None, ge=1)
    quantize: Quantization | None = None
    checkpoint_path: str | None = None
    metadata: dict[str, Any] | None = None
    post_inference_hooks: list[str] | None = None
    endpoint_type: ModelEndpointType | None = None
    cpus: CpuSpecificationType | None = None
    gpus: int | None = Field(default=None, ge=0)
    memory: StorageSpecificationType | None = None
    gpu_type: GpuType | None = None
    storage: StorageSpecificationType | None = None
    min_workers: int | None = Field(default=None, ge=0)
    max_workers: int | None = Field(default=None, ge=0)
    per_worker: int | None = Field(default=None, gt=0)
    labels: dict[str, str] | None = None
    high_priority: bool | None = None
    default_callback_url: HttpUrl | None = None
    public_inference: bool | None = None


class UpdateLLMEndpointResponse(BaseModel):
    endpoint_creation_task_id: str


class DeleteLLMEndpointResponse(BaseModel):
    deleted: bool


# --- completions -------------------------------------------------------------------------------------------------


class SamplingFields(BaseModel):
    """How tokens are sampled: the fields a completion request and a batch job's content share."""

    temperature: float = Field(ge=0.0, le=1.0)
    """0 means greedy decoding."""
    stop_sequences: list[str] | None = None
    return_token_log_probs: bool | None = False
    presence_penalty: float | None = Field(default=None, ge=0.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=0.0, le=2.0)
    top_k: int | None = Field(default=None, ge=-1)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)


class CompletionSyncV1Request(SamplingFields, _Request):  # _Request last: its config (extra="allow") wins
    prompt: str
    max_new_tokens: int = Field(gt=0)
    include_stop_str_in_output: bool | None = None
    guided_json: dict[str, Any] | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    skip_special_tokens: bool | None = None


class CompletionStreamV1Request(CompletionSyncV1Request):
    pass


class TokenOutput(BaseModel):
    token: str
    log_prob: float


class CompletionOutput(BaseModel):
    text: str
    num_prompt_tokens: int | None = None
    num_completion_tokens: int
    tokens: list[TokenOutput] | None = None


class CompletionSyncV1Response(BaseModel):
    request_id: str
    """Generated by the gateway; quote it when reporting a problem."""
    output: CompletionOutput

    @property
    def outputs(self) -> list[CompletionOutput]:
        """``[output]``: the early documented form of this response (``response.outputs[0].text``)."""
        return [self.output]


class CompletionStreamOutput(BaseModel):
    text: str
    finished: bool
    num_prompt_tokens: int | None = None
    num_completion_tokens: int | None = None
    token: TokenOutput | None = None


class StreamErrorContent(BaseModel):
    error: str
    timestamp: str


class StreamError(BaseModel):
    """An error that happened after the stream started: the stream's last event carries it instead of output."""

    status_code: int
    content: StreamErrorContent


class CompletionStreamV1Response(BaseModel):
    request_id: str | None = None
    output: CompletionStreamOutput | None = None
    error: StreamError | None = None


# --- async tasks -------------------------------------------------------------------------------------------------


class CreateAsyncTaskV1Response(BaseModel):
    task_id: str


class GetAsyncTaskV1Response(BaseModel):
    task_id: str
    status: TaskStatus
    result: Any = None
    """For SUCCESS, the same object completions-sync returns (parse it with ``CompletionSyncV1Response``)."""
    traceback: str | None = None


# Aliases the published client exports.
CompletionSyncRequest: TypeAlias = CompletionSyncV1Request
CompletionSyncResponse: TypeAlias = CompletionSyncV1Response
CompletionStreamRequest: TypeAlias = CompletionStreamV1Request
CompletionStreamResponse: TypeAlias = CompletionStreamV1Response


# Files and batch completions live in their own module (it imports BaseModel from here, hence the late import);
# re-exported where the published client has them.
from llmengine import job_types as _job_types  # noqa: E402

BatchCompletionsJob = _job_types.BatchCompletionsJob
BatchCompletionsJobStatus = _job_types.BatchCompletionsJobStatus
CreateBatchCompletionsModelConfig = _job_types.CreateBatchCompletionsModelConfig
CreateBatchCompletionsV1RequestContent = _job_types.CreateBatchCompletionsV1RequestContent
CreateBatchCompletionsV1Response = _job_types.CreateBatchCompletionsV1Response
DeleteFileResponse = _job_types.DeleteFileResponse
GetFileContentResponse = _job_types.GetFileContentResponse
GetFileResponse = _job_types.GetFileResponse
ListFilesResponse = _job_types.ListFilesResponse
UploadFileResponse = _job_types.UploadFileResponse
