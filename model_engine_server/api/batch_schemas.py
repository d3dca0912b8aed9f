"""Request and response bodies of ``/v1/llm/batch-completions`` and ``/v2/batch-completions``, as llm-engine's."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_engine_server.domain.jobs import Job


class _Loose(BaseModel):
    # Unknown fields ignored; strict JSON types as the document states them (no "5" for 5, no 0 for false).
    model_config = ConfigDict(extra="ignore", protected_namespaces=(), strict=True)


class BatchModelConfig(_Loose):
    model: str = Field(min_length=1)
    checkpoint_path: str | None = None
    num_shards: int | None = Field(default=1, ge=1)
    max_context_length: int | None = Field(default=None, ge=1)
    seed: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class V2Request(_Loose):
    """One OpenAI-style completion (``prompt``) or chat (``messages``) request of a v2 batch."""

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    n: int | None = None
    logprobs: bool | int | None = None

    @model_validator(mode="after")
    def _one_input(self) -> V2Request:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("each request needs exactly one of `prompt` (completion) and `messages` (chat)")
        if self.n not in (None, 1):
            raise ValueError("n must be 1: a batch job answers each request with one choice")
        if self.logprobs:
            raise ValueError("logprobs are not returned in v2 batch output; use v1 content with return_token_log_probs")
        return self


class BatchRequest(_Loose):
    """The fields v1 and v2 share; ``content`` is checked by the submission (its shape depends on the version)."""

    input_data_path: str | None = None
    output_data_path: str = Field(min_length=1)
    content: Any = None
    model_config_: BatchModelConfig = Field(alias="model_config")
    data_parallelism: int | None = Field(default=1, ge=1, le=64)
    max_runtime_sec: int | None = Field(default=24 * 3600, ge=1, le=2 * 24 * 3600)
    labels: dict[str, str] = Field(default_factory=dict)
    priority: str | None = None
    cpus: str | int | float | None = None
    gpus: int | None = Field(default=None, ge=0)
    memory: str | None = None
    gpu_type: str | None = None
    storage: str | None = None
    tool_config: dict[str, Any] | None = None


class CreateBatchV1Response(BaseModel):
    job_id: str


class BatchJobResponse(BaseModel):
    """llm-engine's ``BatchCompletionsJob``, plus ``progress`` and ``status_reason``."""

    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    input_data_path: str | None
    output_data_path: str
    model_config_: dict[str, Any] = Field(serialization_alias="model_config")
    priority: str | None
    status: str
    created_at: str
    expires_at: str
    completed_at: str | None
    metadata: dict[str, str] | None
    progress: dict[str, int]
    status_reason: str | None

    @classmethod
    def of(cls, job: Job) -> BatchJobResponse:
        return cls(
            job_id=job.id,
            input_data_path=job.spec.get("input_data_path"),
            output_data_path=job.spec["output_data_path"],
            model_config_=job.spec["model_config"],
            priority=job.priority,
            status=job.status.value,
            created_at=job.created_at.isoformat(),
            expires_at=job.expires_at.isoformat(),
            completed_at=job.completed_at.isoformat() if job.completed_at else None,
            metadata={**job.spec.get("labels", {}), **job.result},
            progress={"done": job.progress_done, "total": job.progress_total},
            status_reason=job.status_reason,
        )


class GetBatchJobResponse(BaseModel):
    job: BatchJobResponse


class UpdateBatchJobRequest(_Loose):
    priority: str | None = None


class UpdateBatchJobResponse(BatchJobResponse):
    success: bool


class CancelBatchJobResponse(BaseModel):
    success: bool
