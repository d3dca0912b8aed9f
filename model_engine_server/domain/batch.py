"""Batch completions as a job: one normalized item per prompt, and what a worker needs to run them.

The gateway turns every accepted request shape (v1 content, v2 completion or chat requests, an input file) into
``BatchItem``s at submit time, so workers run one format and bad input is a 400 before anything is queued.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OutputFormat(StrEnum):
    V1 = "v1"  # {"text", "num_prompt_tokens", "num_completion_tokens", "tokens"?}
    COMPLETION = "completion"  # an OpenAI text_completion object
    CHAT = "chat"  # an OpenAI chat.completion object


class BatchItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None  # chat requests: rendered with the model's chat template
    max_new_tokens: int = Field(ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    stop: list[str] = Field(default_factory=list)
    return_token_log_probs: bool = False
    top_k: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None


class BatchWorkerSpec(BaseModel):
    """``job.json`` in a batch job's workspace."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    checkpoint_path: str | None = None
    max_context_length: int | None = None
    output_data_path: str
    output_format: OutputFormat
    total: int
    chunk_size: int = Field(ge=1)
    workers: int = Field(ge=1)
    max_in_flight: int = Field(default=128, ge=1)  # prompts in the engine at once (whole parts, at least one)


def chunk_ranges(total: int, chunk_size: int) -> list[tuple[int, int]]:
    """The parts a batch is written in: ``[start, end)`` ranges of prompt indices."""
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def worker_ranges(total: int, chunk_size: int, workers: int, index: int) -> list[tuple[int, int]]:
    """The parts worker ``index`` of ``workers`` owns: every ``workers``-th one, so all share the tail evenly."""
    return chunk_ranges(total, chunk_size)[index::workers]
