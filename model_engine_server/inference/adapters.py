"""Engine adapters: one class per inference-server protocol, converting our completion request into the engine's
request and the engine's responses (and stream events) back into ours.

Pure functions and small stateful parsers; no I/O. ``inference/upstream.py`` does the HTTP and calls these.

    TgiAdapter    text-generation-inference: ``POST /generate``, ``POST /generate_stream`` (also the built-in server)
    VllmAdapter   vLLM's OpenAI server: ``POST /v1/completions`` with ``stream``

Choices that hold for both protocols, so an endpoint behaves the same whichever engine serves it:
- temperature 0 means greedy decoding; top_k/top_p only apply when sampling;
- the matched stop sequence stays at the end of the text (TGI's behaviour; vLLM is asked to do the same), so a
  stream and a sync call of the same request produce the same text without the gateway buffering tokens;
- special tokens (e.g. end-of-sequence) count as completion tokens but add no text.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, StreamDelta, TokenOutput
from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.domain.exceptions import (
    DomainError,
    EndpointNotReadyError,
    InvalidRequestError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)

JsonObject = dict[str, Any]


class StreamParser(Protocol):
    """Turns the ``data:`` payloads of one engine stream into deltas; keeps whatever state the protocol needs."""

    def feed(self, data: str) -> list[StreamDelta]:
        """Deltas carried by one ``data:`` payload; raises ``UpstreamError`` for an in-band engine error."""

    def end(self) -> list[StreamDelta]:
        """Called when the engine closed the stream; raises ``UpstreamError`` if it ended before finishing."""


class EngineAdapter(Protocol):
    generate_path: str
    stream_path: str

    def generate_body(self, request: CompletionRequest) -> JsonObject:
        """The engine's request body for a single (non-streaming) completion."""

    def stream_body(self, request: CompletionRequest) -> JsonObject:
        """The engine's request body for a streamed completion."""

    def parse_generate(self, body: object, request: CompletionRequest) -> CompletionOutput:
        """Our output from the engine's decoded JSON response."""

    def stream_parser(self, request: CompletionRequest) -> StreamParser:
        """A fresh parser for one stream."""


def adapter_for(framework: InferenceFramework) -> EngineAdapter:
    """The adapter speaking ``framework``'s protocol (the built-in server speaks TGI's)."""
    return _ADAPTERS[framework]


# --- errors, shared by both protocols ---------------------------------------------------------------------------


def _error_message(body: object) -> str | None:
    """The human-readable message of a TGI (``{"error": "..."}``) or OpenAI-style (``{"message"}``,
    ``{"error": {"message"}}``) error body."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    message = body.get("message")
    return message if isinstance(message, str) else None


def _error_param(body: object) -> str | None:
    """The request field an OpenAI-style error body names (``{"param"}`` or ``{"error": {"param"}}``)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    param = error.get("param") if isinstance(error, dict) else body.get("param")
    return param if isinstance(param, str) and param else None


def error_from_response(status_code: int, content: bytes) -> DomainError:
    """Translate an engine's non-2xx answer into the domain error the caller should see."""
    try:
        body = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        body = None
    message = _error_message(body)
    if message is None:
        message = content[:200].decode("utf-8", "replace").strip() or "no details"
    if status_code in (400, 422):
        # The engine validated the request against the model (e.g. prompt plus max_new_tokens too long).
        return InvalidRequestError(f"The model server rejected the request: {message}", param=_error_param(body))
    if status_code == 429:
        return OverloadedError(f"The model server is overloaded, retry later: {message}")
    if status_code == 503:
        return EndpointNotReadyError(f"The model server is not ready: {message}")
    if status_code in (408, 504):
        return UpstreamTimeoutError(f"The model server timed out: {message}")
    return UpstreamError(f"The model server failed with HTTP {status_code}: {message}")


def decode_event(data: str) -> JsonObject:
    """One ``data:`` payload of an engine stream as an object; raises ``UpstreamError`` for garbage and for an
    in-band engine error (TGI's ``{"error": "..."}``, vLLM's ``{"error": {...}}`` or ``{"object": "error"}``)."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"The model server sent an invalid stream event: {data[:200]!r}") from exc
    if not isinstance(event, dict):
        raise UpstreamError(f"The model server sent an invalid stream event: {data[:200]!r}")
    if event.get("error") is not None or event.get("object") == "error":
        message = _error_message(event) or repr(event.get("error"))
        raise UpstreamError(f"The model server failed mid-stream: {message}")
    return event


def _invalid(detail: str) -> UpstreamError:
    return UpstreamError(f"The model server sent an unexpected response: {detail}")


def _require_dict(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict):
        raise _invalid(f"{what} is missing")
    return value


# --- text-generation-inference ------------------------------------------------------------------------------------


class TgiAdapter:
    """TGI's native protocol: ``{"inputs", "parameters"}`` in, ``{"generated_text", "details"}`` out."""

    generate_path = "/generate"
    stream_path = "/generate_stream"

    def _parameters(self, request: CompletionRequest) -> JsonObject:
        if request.presence_penalty:
            # TGI has no presence penalty; silently dropping it would change the sampling the caller asked for.
            raise InvalidRequestError("presence_penalty is not supported by text_generation_inference endpoints.")
        parameters: JsonObject = {"max_new_tokens": request.max_new_tokens, "details": True}
        if request.temperature > 0:
            parameters["do_sample"] = True
            parameters["temperature"] = request.temperature
            # TGI rejects top_k <= 0 and top_p >= 1, which both mean "off": leave them out instead.
            if request.top_k is not None and request.top_k > 0:
                parameters["top_k"] = request.top_k
            if request.top_p is not None and request.top_p < 1:
                parameters["top_p"] = request.top_p
        else:
            parameters["do_sample"] = False
        if request.stop_sequences:
            parameters["stop"] = list(request.stop_sequences)
        if request.frequency_penalty:
            parameters["frequency_penalty"] = request.frequency_penalty
        return parameters

    def generate_body(self, request: CompletionRequest) -> JsonObject:
        parameters = self._parameters(request)
        # The prefill details are how TGI reports the prompt's token count.
        parameters["decoder_input_details"] = True
        return {"inputs": request.prompt, "parameters": parameters}

    def stream_body(self, request: CompletionRequest) -> JsonObject:
        # TGI refuses decoder_input_details when streaming; the last event's details carry input_length instead.
        return {"inputs": request.prompt, "parameters": self._parameters(request)}

    def parse_generate(self, body: object, request: CompletionRequest) -> CompletionOutput:
        if isinstance(body, list) and len(body) == 1:  # some TGI versions answer with a one-element list
            body = body[0]
        body = _require_dict(body, "the response object")
        text = body.get("generated_text")
        if not isinstance(text, str):
            raise _invalid("generated_text is missing")
        details = _require_dict(body.get("details"), "details")
        raw_tokens = details.get("tokens") or []
        # Token objects are only built when asked for: on the hot path only their number matters.
        tokens = [_tgi_token(token) for token in raw_tokens] if request.return_token_log_probs else None
        prefill = details.get("prefill")
        num_prompt_tokens = len(prefill) if isinstance(prefill, list) and prefill else None
        return CompletionOutput(
            text=text,
            num_prompt_tokens=num_prompt_tokens or _int_or_none(details.get("input_length")),
            num_completion_tokens=_int(details.get("generated_tokens"), default=len(raw_tokens)),
            tokens=tokens,
        )

    def stream_parser(self, request: CompletionRequest) -> StreamParser:
        return _TgiStreamParser(request.return_token_log_probs)


class _TgiStreamParser:
    """One event per token: ``{"token": {"text", "logprob", "special"}, "generated_text", "details"}``; the last
    event has ``details`` (and ``generated_text``)."""

    def __init__(self, with_tokens: bool) -> None:
        self._with_tokens = with_tokens
        self._finished = False
        self._count = 0

    def feed(self, data: str) -> list[StreamDelta]:
        event = decode_event(data)
        raw_token = _require_dict(event.get("token"), "token")
        self._count += 1
        token = _tgi_token(raw_token)
        text = "" if raw_token.get("special") else token.token
        details = event.get("details")
        if not isinstance(details, dict):
            return [StreamDelta(text=text, finished=False, token=token if self._with_tokens else None)]
        self._finished = True
        return [
            StreamDelta(
                text=text,
                finished=True,
                num_prompt_tokens=_int_or_none(details.get("input_length")),
                num_completion_tokens=_int(details.get("generated_tokens"), default=self._count),
                token=token if self._with_tokens else None,
            )
        ]

    def end(self) -> list[StreamDelta]:
        if not self._finished:
            raise UpstreamError("The model server closed the stream before the completion finished.")
        return []


def _tgi_token(raw: object) -> TokenOutput:
    token = _require_dict(raw, "token")
    text = token.get("text")
    if not isinstance(text, str):
        raise _invalid("token text is missing")
    logprob = token.get("logprob")
    return TokenOutput(token=text, log_prob=float(logprob) if isinstance(logprob, int | float) else 0.0)


# --- vLLM (OpenAI completions) -------------------------------------------------------------------------------------


class VllmAdapter:
    """vLLM's OpenAI-compatible ``/v1/completions``. The ``model`` field is left out: vLLM then uses the one model
    the server serves, whatever name the orchestrator gave it."""

    generate_path = "/v1/completions"
    stream_path = "/v1/completions"

    def generate_body(self, request: CompletionRequest) -> JsonObject:
        body: JsonObject = {
            "prompt": request.prompt,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,  # vLLM decodes greedily at 0
            "n": 1,
            # Keep the stop sequence in the text, as TGI does (see the module docstring).
            "include_stop_str_in_output": True,
        }
        if request.temperature > 0:
            if request.top_k is not None and request.top_k > 0:
                body["top_k"] = request.top_k
            if request.top_p is not None:
                body["top_p"] = request.top_p
        if request.stop_sequences:
            body["stop"] = list(request.stop_sequences)
        if request.presence_penalty is not None:
            body["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            body["frequency_penalty"] = request.frequency_penalty
        if request.return_token_log_probs:
            body["logprobs"] = 0  # the sampled token's log-prob, no alternatives
        return body

    def stream_body(self, request: CompletionRequest) -> JsonObject:
        body = self.generate_body(request)
        body["stream"] = True
        # Without this the stream carries no token counts; with it a last chunk holds ``usage``.
        body["stream_options"] = {"include_usage": True}
        return body

    def parse_generate(self, body: object, request: CompletionRequest) -> CompletionOutput:
        body = _require_dict(body, "the response object")
        choice = _first_choice(body)
        text = choice.get("text")
        if not isinstance(text, str):
            raise _invalid("choices[0].text is missing")
        raw_usage = body.get("usage")
        usage: JsonObject = raw_usage if isinstance(raw_usage, dict) else {}
        tokens = _openai_tokens(choice.get("logprobs"))
        return CompletionOutput(
            text=text,
            num_prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            num_completion_tokens=_int(usage.get("completion_tokens"), default=len(tokens)),
            tokens=tokens if request.return_token_log_probs else None,
        )

    def stream_parser(self, request: CompletionRequest) -> StreamParser:
        return _OpenAiStreamParser(request.return_token_log_probs)


class _OpenAiStreamParser:
    """Chunks ``{"choices": [{"text", "logprobs", "finish_reason"}]}``, then (asked for by ``include_usage``) one
    chunk with ``usage`` and no choices, then ``[DONE]``. We finish on ``usage``, or on ``[DONE]`` at the latest."""

    def __init__(self, with_tokens: bool) -> None:
        self._with_tokens = with_tokens
        self._finished = False
        self._saw_finish_reason = False
        self._count = 0

    def feed(self, data: str) -> list[StreamDelta]:
        if self._finished:
            return []
        if data.strip() == "[DONE]":
            return self._finish(None, None)
        event = decode_event(data)
        deltas: list[StreamDelta] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                raise _invalid("a choice is not an object")
            deltas.extend(self._choice_deltas(choice))
        usage = event.get("usage")
        if isinstance(usage, dict) and (self._saw_finish_reason or not event.get("choices")):
            deltas.extend(self._finish(_int_or_none(usage.get("prompt_tokens")), usage.get("completion_tokens")))
        return deltas

    def _choice_deltas(self, choice: JsonObject) -> list[StreamDelta]:
        text = choice.get("text")
        text = text if isinstance(text, str) else ""
        tokens = _openai_tokens(choice.get("logprobs"))
        self._count += len(tokens) if tokens else (1 if text else 0)
        if choice.get("finish_reason") is not None:
            self._saw_finish_reason = True
        if not self._with_tokens or len(tokens) <= 1:
            token = tokens[0] if tokens and self._with_tokens else None
            return [StreamDelta(text=text, finished=False, token=token)] if text or token else []
        # Several tokens in one chunk: one delta per token keeps the token/log-prob pairing.
        return [StreamDelta(text=token.token, finished=False, token=token) for token in tokens]

    def _finish(self, prompt_tokens: int | None, completion_tokens: object) -> list[StreamDelta]:
        if not self._saw_finish_reason:
            raise UpstreamError("The model server closed the stream before the completion finished.")
        self._finished = True
        return [
            StreamDelta(
                text="",
                finished=True,
                num_prompt_tokens=prompt_tokens,
                num_completion_tokens=_int(completion_tokens, default=self._count),
            )
        ]

    def end(self) -> list[StreamDelta]:
        return [] if self._finished else self._finish(None, None)


def _first_choice(body: JsonObject) -> JsonObject:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _invalid("choices is empty")
    return _require_dict(choices[0], "choices[0]")


def _openai_tokens(logprobs: object) -> list[TokenOutput]:
    """``{"tokens": [...], "token_logprobs": [...]}`` → our tokens (empty when log-probs were not asked for)."""
    if not isinstance(logprobs, dict):
        return []
    texts = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    return [
        TokenOutput(token=str(text), log_prob=float(value) if isinstance(value, int | float) else 0.0)
        for text, value in zip(texts, values, strict=False)
    ]


def _int(value: object, *, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_ADAPTERS: dict[InferenceFramework, EngineAdapter] = {
    InferenceFramework.TEXT_GENERATION_INFERENCE: TgiAdapter(),
    InferenceFramework.VLLM: VllmAdapter(),
}
