"""Request validation with TGI's rules and messages: a request either becomes a ``ValidRequest`` or raises
``GenerationRequestError`` (HTTP 422 ``{"error", "error_type": "validation"}``).

One deliberate difference: ``temperature == 0`` is accepted and means greedy (TGI rejects it), because the platform's
own API defines 0 as greedy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from model_engine_server.inference.server.protocol import TgiParameters
from model_engine_server.inference.server.sampling import SamplingParams

_MAX_SEED = 2**64 - 1


class GenerationRequestError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(f"Input validation error: {message}")
        self.message = f"Input validation error: {message}"


@dataclass(frozen=True)
class TokenLimits:
    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int = 4


@dataclass(frozen=True)
class ValidRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]


class RequestValidator:
    def __init__(self, tokenizer: Any, limits: TokenLimits) -> None:
        self.tokenizer = tokenizer
        self.limits = limits

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    def validate_tgi(self, inputs: str, params: TgiParameters, stream: bool) -> ValidRequest:
        if params.best_of not in (None, 1):
            raise GenerationRequestError(
                "`best_of` != 1 is not supported when streaming tokens"
                if stream
                else f"`best_of` must be > 0 and <= 1. Given: {params.best_of}"
            )
        if stream and params.decoder_input_details:
            raise GenerationRequestError("`decoder_input_details` == true is not supported when streaming tokens")
        if params.typical_p is not None and not 0.0 < params.typical_p < 1.0:
            raise GenerationRequestError("`typical_p` must be > 0.0 and < 1.0")
        return self.validate(
            inputs,
            max_new_tokens=params.max_new_tokens,
            sampling=self.sampling(
                seed=params.seed,
                do_sample=params.do_sample,
                temperature=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                repetition_penalty=params.repetition_penalty,
                frequency_penalty=params.frequency_penalty,
            ),
            stop=params.stop,
            truncate=params.truncate,
        )

    def sampling(
        self,
        *,
        seed: int | None,
        do_sample: bool = False,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
    ) -> SamplingParams:
        if temperature is not None and temperature < 0.0:
            raise GenerationRequestError("`temperature` must be strictly positive")
        if repetition_penalty is not None and repetition_penalty <= 0.0:
            raise GenerationRequestError("`repetition_penalty` must be strictly positive")
        if frequency_penalty is not None and not -2.0 <= frequency_penalty <= 2.0:
            raise GenerationRequestError("`frequency_penalty` must be >= -2.0 and <= 2.0")
        if presence_penalty is not None and not -2.0 <= presence_penalty <= 2.0:
            raise GenerationRequestError("`presence_penalty` must be >= -2.0 and <= 2.0")
        if top_p is not None and not 0.0 < top_p < 1.0:
            raise GenerationRequestError("`top_p` must be > 0.0 and < 1.0")
        if top_k is not None and top_k <= 0:
            raise GenerationRequestError("`top_k` must be strictly positive")
        if seed is not None and not 0 <= seed <= _MAX_SEED:
            raise GenerationRequestError(f"`seed` must be between 0 and {_MAX_SEED}")
        return SamplingParams(
            seed=random.getrandbits(64) if seed is None else seed,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )

    def validate(
        self,
        inputs: str | list[int],
        *,
        max_new_tokens: int | None,
        sampling: SamplingParams,
        stop: list[str],
        truncate: int | None = None,
    ) -> ValidRequest:
        limits = self.limits
        if isinstance(inputs, str) and not inputs:
            raise GenerationRequestError("`inputs` cannot be empty")
        if not inputs:
            raise GenerationRequestError("`inputs` cannot be empty")
        if len(stop) > limits.max_stop_sequences:
            raise GenerationRequestError(
                f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stop)}"
            )
        if any(not s for s in stop):
            raise GenerationRequestError("`stop` sequences cannot be empty")
        if max_new_tokens is not None and max_new_tokens <= 0:
            raise GenerationRequestError("`max_new_tokens` must be strictly positive")
        if truncate is not None and not 0 < truncate <= limits.max_input_tokens:
            raise GenerationRequestError(
                f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {truncate}"
            )
        prompt_ids = self.tokenize(inputs) if isinstance(inputs, str) else list(inputs)
        if truncate is not None:
            prompt_ids = prompt_ids[-truncate:]
        if not prompt_ids:
            raise GenerationRequestError("`inputs` cannot be empty")
        input_length = len(prompt_ids)
        if input_length > limits.max_input_tokens:
            raise GenerationRequestError(
                f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
            )
        if max_new_tokens is None:
            max_new_tokens = limits.max_total_tokens - input_length
        if input_length + max_new_tokens > limits.max_total_tokens:
            raise GenerationRequestError(
                f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                f"Given: {input_length} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
            )
        return ValidRequest(prompt_ids, max_new_tokens, sampling, tuple(stop))
