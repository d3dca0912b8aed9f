"""Completion requests and results in the platform's own terms, independent of any engine's protocol."""

from __future__ import annotations

from dataclasses import dataclass, field

from model_engine_server.domain.exceptions import InvalidRequestError


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


def check_fits_context(request: CompletionRequest, context_length: int, model: str) -> None:
    """400 before any engine work when the request cannot fit the model's context.

    The gateway has no tokenizer, so it counts what is certain: every whitespace-separated word of the prompt is at
    least one token (BPE and SentencePiece tokenizers never join words across whitespace). Prompts that pass may
    still be refused by the engine, whose exact count then decides.
    """
    if request.max_new_tokens > context_length:
        raise InvalidRequestError(
            f"max_new_tokens ({request.max_new_tokens}) exceeds the context length of {model} "
            f"({context_length} tokens)."
        )
    at_least = len(request.prompt.split())
    if at_least + request.max_new_tokens > context_length:
        raise InvalidRequestError(
            f"prompt is too long: at least {at_least} tokens plus max_new_tokens ({request.max_new_tokens}) exceed "
            f"the context length of {model} ({context_length} tokens)."
        )
