"""Completion requests and results in the platform's own terms, independent of any engine's protocol."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    max_new_tokens: int
    temperature: float  # 0 means greedy
    stop_sequences: list[str] = field(default_factory=list)
    return_token_log_probs: bool = False
    top_k: int | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


@dataclass(frozen=True)
class TokenOutput:
    token: str
    log_prob: float


@dataclass(frozen=True)
class CompletionOutput:
    text: str
    num_prompt_tokens: int | None
    num_completion_tokens: int
    tokens: list[TokenOutput] | None = None


@dataclass(frozen=True)
class StreamDelta:
    """One streamed step: the new text, and on the last step ``finished`` with the counts."""

    text: str
    finished: bool
    num_prompt_tokens: int | None = None
    num_completion_tokens: int | None = None
    token: TokenOutput | None = None
