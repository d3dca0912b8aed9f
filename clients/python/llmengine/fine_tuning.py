"""Fine-tunes: LoRA on your prompt/response CSV, whose result ``Model.create`` deploys by name."""

from __future__ import annotations

from typing import Any

from llmengine import _transport
from llmengine.job_types import (
    CancelFineTuneResponse,
    CreateFineTuneResponse,
    GetFineTuneEventsResponse,
    GetFineTuneResponse,
    ListFineTunesResponse,
)

FINE_TUNES_PATH = "v1/llm/fine-tunes"


class FineTune:
    """Fine-tuning jobs of the caller's tenant. Signatures match the published ``scale-llm-engine`` client."""

    @classmethod
    def create(
        cls,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        hyperparameters: dict[str, str | int | float] | None = None,
        wandb_config: dict[str, Any] | None = None,
        suffix: str | None = None,
    ) -> CreateFineTuneResponse:
        """Start fine-tuning ``model`` (a zoo name, or one of your fine-tuned models) on the uploaded CSV
        ``training_file`` (columns ``prompt,response``). Not retried: a second create would start a second job."""
        body = {
            "model": model,
            "training_file": training_file,
            "validation_file": validation_file,
            "hyperparameters": hyperparameters,
            "wandb_config": wandb_config,
            "suffix": suffix,
        }
        return _transport.request_model("POST", FINE_TUNES_PATH, CreateFineTuneResponse, json=body)

    @classmethod
    def get(cls, fine_tune_id: str) -> GetFineTuneResponse:
        """The job's status and, once it succeeded, the name of the fine-tuned model (``Model.create`` takes it)."""
        return _transport.request_model("GET", f"{FINE_TUNES_PATH}/{fine_tune_id}", GetFineTuneResponse)

    @classmethod
    def list(cls) -> ListFineTunesResponse:
        """Every fine-tuning job of the caller's tenant."""
        return _transport.request_model("GET", FINE_TUNES_PATH, ListFineTunesResponse)

    @classmethod
    def cancel(cls, fine_tune_id: str) -> CancelFineTuneResponse:
        """Stop the job; ``success`` is False when it had already finished."""
        return _transport.request_model("PUT", f"{FINE_TUNES_PATH}/{fine_tune_id}/cancel", CancelFineTuneResponse)

    @classmethod
    def get_events(cls, fine_tune_id: str) -> GetFineTuneEventsResponse:
        """Training loss per step, validation loss per epoch, and the job's own events, oldest first."""
        return _transport.request_model("GET", f"{FINE_TUNES_PATH}/{fine_tune_id}/events", GetFineTuneEventsResponse)
