"""Request and response bodies of ``/v1/llm/fine-tunes``, as the published ``scale-llm-engine`` client sends and
parses them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model_engine_server.domain.jobs import Job, JobEvent, JobStatus


class FineTuneStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"
    UNDEFINED = "UNDEFINED"


_STATUS = {
    JobStatus.QUEUED: FineTuneStatus.PENDING,
    JobStatus.RUNNING: FineTuneStatus.RUNNING,
    JobStatus.COMPLETED: FineTuneStatus.SUCCESS,
    JobStatus.FAILED: FineTuneStatus.FAILURE,
    JobStatus.CANCELLED: FineTuneStatus.CANCELLED,
    JobStatus.UNKNOWN: FineTuneStatus.UNDEFINED,
}


class CreateFineTuneRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # JSON types as the document states them

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    wandb_config: dict[str, Any] | None = None
    suffix: str | None = None


class CreateFineTuneResponse(BaseModel):
    id: str


class GetFineTuneResponse(BaseModel):
    id: str
    fine_tuned_model: str | None
    status: FineTuneStatus
    status_reason: str | None = None
    progress: str | None = None  # "steps done/total" while it trains

    @classmethod
    def of(cls, job: Job) -> GetFineTuneResponse:
        progress = f"{job.progress_done}/{job.progress_total}" if job.progress_total else None
        return cls(
            id=job.id,
            fine_tuned_model=job.spec.get("fine_tuned_model"),
            status=_STATUS[job.status],
            status_reason=job.status_reason,
            progress=progress,
        )


class ListFineTunesResponse(BaseModel):
    jobs: list[GetFineTuneResponse]


class CancelFineTuneResponse(BaseModel):
    success: bool


class FineTuneEvent(BaseModel):
    timestamp: float  # seconds since the epoch, as the published client reads it
    message: str
    level: str

    @classmethod
    def of(cls, event: JobEvent) -> FineTuneEvent:
        return cls(timestamp=event.timestamp.timestamp(), message=event.message, level=event.level)


class GetFineTuneEventsResponse(BaseModel):
    events: list[FineTuneEvent]


class ModelDownloadRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    model_name: str = Field(min_length=1)
    download_format: str = "hugging_face"


class ModelDownloadResponse(BaseModel):
    urls: dict[str, str]
