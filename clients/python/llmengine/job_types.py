"""Request and response models of files and batch completions, field for field as the published client's."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import ConfigDict, Field

from llmengine.data_types import BaseModel, SamplingFields


class UploadFileResponse(BaseModel):
    id: str


class GetFileResponse(BaseModel):
    id: str
    filename: str
    size: int  # bytes


class ListFilesResponse(BaseModel):
    files: list[GetFileResponse]


class DeleteFileResponse(BaseModel):
    deleted: bool


class GetFileContentResponse(BaseModel):
    id: str
    content: str


class ToolConfig(BaseModel):
    name: str
    max_iterations: int | None = 10
    execution_timeout_seconds: int | None = 60
    should_retry_on_error: bool | None = True


class BatchCompletionsModelConfig(BaseModel):
    """The model a batch job loads; engine options beyond these (vLLM's) are passed through."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    checkpoint_path: str | None = None
    num_shards: int | None = Field(default=1, ge=1)
    max_context_length: int | None = Field(default=None, ge=1)
    seed: int | None = None
    response_role: str | None = None


class CreateBatchCompletionsV1ModelConfig(BatchCompletionsModelConfig):
    labels: dict[str, str] = Field(default_factory=dict)


CreateBatchCompletionsModelConfig: TypeAlias = CreateBatchCompletionsV1ModelConfig
CreateBatchCompletionsV2ModelConfig: TypeAlias = BatchCompletionsModelConfig


class CreateBatchCompletionsV1RequestContent(SamplingFields):
    prompts: list[str]
    max_new_tokens: int
    skip_special_tokens: bool | None = True


CreateBatchCompletionsRequestContent: TypeAlias = CreateBatchCompletionsV1RequestContent
# v2 content: a v1 content object, or a list of OpenAI-style completion ({"prompt", ...}) or chat
# ({"messages", ...}) requests.
BatchCompletionContent: TypeAlias = CreateBatchCompletionsV1RequestContent | list[dict[str, Any]]


class CreateBatchCompletionsV1Response(BaseModel):
    job_id: str


CreateBatchCompletionsResponse: TypeAlias = CreateBatchCompletionsV1Response


class BatchCompletionsJobStatus(StrEnum):
    Queued = "queued"
    Running = "running"
    Completed = "completed"
    Failed = "failed"
    Cancelled = "cancelled"
    Unknown = "unknown"


class BatchCompletionsJob(BaseModel):
    model_config = ConfigDict(protected_namespaces=(), populate_by_name=True)

    job_id: str
    input_data_path: str | None = None
    output_data_path: str
    model_config_: BatchCompletionsModelConfig = Field(alias="model_config")
    priority: str | None = None
    status: BatchCompletionsJobStatus
    created_at: str
    expires_at: str
    completed_at: str | None = None
    metadata: dict[str, str] | None = None
    progress: dict[str, int] | None = None  # {"done", "total"} prompts; this platform's addition
    status_reason: str | None = None  # why a job failed; this platform's addition


CreateBatchCompletionsV2Response: TypeAlias = BatchCompletionsJob


class FineTuneStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    UNDEFINED = "UNDEFINED"


class CreateFineTuneResponse(BaseModel):
    id: str


class GetFineTuneResponse(BaseModel):
    id: str
    fine_tuned_model: str | None = None  # deploy it with Model.create(model=...)
    status: FineTuneStatus
    status_reason: str | None = None
    progress: str | None = None  # "steps done/total"


class ListFineTunesResponse(BaseModel):
    jobs: list[GetFineTuneResponse]


class CancelFineTuneResponse(BaseModel):
    success: bool


class LLMFineTuneEvent(BaseModel):
    timestamp: float | None = None  # seconds since the epoch
    message: str
    level: str


class GetFineTuneEventsResponse(BaseModel):
    events: list[LLMFineTuneEvent]


class ModelDownloadResponse(BaseModel):
    urls: dict[str, str]  # file name -> URL, readable without credentials until it expires
