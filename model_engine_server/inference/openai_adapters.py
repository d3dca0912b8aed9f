"""OpenAI-protocol proxying: what each engine's OpenAI routes need changed in a request, and the engine's answers
normalised into OpenAI's exact shapes under the gateway's id and the endpoint's name.

    text-generation-inference   TGI's Messages API (``/v1/chat/completions``) and ``/v1/completions``; also served
                                by the built-in server. ``model`` is ``tgi``; one choice per request;
                                ``max_completion_tokens`` goes as ``max_tokens``, the only name TGI reads.
    vLLM                        its OpenAI server at the same paths; ``model`` is the served model name, which the
                                orchestrators set to the endpoint's ``model_name``.

Requests and responses stay JSON: the gateway never tokenizes. Streams are always asked for usage, so the gateway's
token counters work; the usage-only chunk is passed on only when the client asked for it. Pure code, no I/O:
``inference/upstream.py`` does the HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from model_engine_server.domain.entities import EndpointConfig, InferenceFramework
from model_engine_server.domain.exceptions import InvalidRequestError, UpstreamError
from model_engine_server.inference.adapters import decode_event

JsonObject = dict[str, Any]
DONE = b"data: [DONE]\n\n"


class OpenAiKind(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"

    @property
    def wire(self) -> OpenAiWire:
        return _WIRE[self]


@dataclass(frozen=True)
class OpenAiWire:
    """How one kind of request looks on the wire: its route, its answer's and chunks' ``object``, its id prefix."""

    path: str
    object: str
    chunk_object: str
    id_prefix: str


_WIRE = {
    OpenAiKind.CHAT: OpenAiWire("/v1/chat/completions", "chat.completion", "chat.completion.chunk", "chatcmpl-"),
    OpenAiKind.COMPLETIONS: OpenAiWire("/v1/completions", "text_completion", "text_completion", "cmpl-"),
}


@dataclass(frozen=True)
class OpenAiEngine:
    """One engine's OpenAI dialect."""

    framework: InferenceFramework
    model_for: Callable[[EndpointConfig], str]
    multiple_choices: bool  # ``n`` > 1 and a list of several prompts in one request
    # Request fields the engine does not know; a value other than null would be silently dropped there.
    unknown_fields: frozenset[str]
    # Fields the engine knows under another name (OpenAI's newer names for older ones).
    renamed_fields: tuple[tuple[str, str], ...] = ()

    def request_bodies(self, kind: OpenAiKind, body: JsonObject, config: EndpointConfig) -> list[JsonObject]:
        """The bodies to send: the caller's validated fields, ``model`` rewritten, the endpoint's chat template, usage
        always asked for. One body, except where the engine answers one choice per request: there a whole request
        for ``n`` choices, or for several prompts, becomes one request per choice (joined by ``merge_responses``)."""
        refused = sorted(name for name in self.unknown_fields if body.get(name) not in (None, False))
        if refused:
            raise InvalidRequestError(
                f"{refused[0]} is not supported by {self.framework.value} endpoints.", param=refused[0]
            )
        upstream = {**body, "model": self.model_for(config)}
        for ours, theirs in self.renamed_fields:
            if ours in upstream:
                upstream[theirs] = upstream.pop(ours)  # the newer name wins, as in OpenAI's API
        if body.get("stream"):
            upstream["stream_options"] = {"include_usage": True}
        if kind is OpenAiKind.CHAT and config.chat_template_override:
            # vLLM and the built-in server take the template per request.
            upstream["chat_template"] = config.chat_template_override
        if self.multiple_choices:
            return [upstream]
        upstream.pop("n", None)
        n = body.get("n") or 1
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if n * len(prompts) > 1 and body.get("stream"):
            raise InvalidRequestError(
                f"{self.framework.value} endpoints stream one choice per request; ask for n > 1 or several "
                "prompts without stream.",
                param="n" if n > 1 else "prompt",
            )
        if n * len(prompts) > MAX_CHOICES:
            raise InvalidRequestError(f"At most {MAX_CHOICES} choices (n times prompts) per request.", param="n")
        if kind is OpenAiKind.CHAT:
            return [upstream] * n
        return [{**upstream, "prompt": one} for one in prompts for _ in range(n)]


def merge_responses(bodies: list[object], n: int) -> object:
    """One response from the answers to ``request_bodies``' requests: their choices in order, re-indexed, and their
    usage added up (each prompt's tokens counted once, as if it were one request for ``n`` choices)."""
    if len(bodies) == 1:
        return bodies[0]
    objects = [_require_choices(body) for body in bodies]
    choices = [choice for body in objects for choice in body["choices"] if isinstance(choice, dict)]
    usages = [body["usage"] if isinstance(body.get("usage"), dict) else {} for body in objects]
    prompt_tokens = sum(_int(usage.get("prompt_tokens")) or 0 for usage in usages[::n])
    completion_tokens = sum(_int(usage.get("completion_tokens")) or 0 for usage in usages)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    usage["total_tokens"] = prompt_tokens + completion_tokens
    indexed = [{**choice, "index": index} for index, choice in enumerate(choices)]
    return {**objects[0], "choices": indexed, "usage": usage}


def _require_choices(body: object) -> JsonObject:
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise UpstreamError("The model server sent an unexpected response: choices is missing")
    return body


MAX_CHOICES = 128  # sub-requests one call may fan out to, where the engine answers one choice per request


# vLLM's extras (and ``echo``, which TGI's completions route lacks).
_VLLM_ONLY = frozenset(
    {
        "top_k",
        "min_p",
        "repetition_penalty",
        "chat_template_kwargs",
        "min_tokens",
        "ignore_eos",
        "chat_template",
        "echo",
    }
)

ENGINES: dict[InferenceFramework, OpenAiEngine] = {
    InferenceFramework.TEXT_GENERATION_INFERENCE: OpenAiEngine(
        InferenceFramework.TEXT_GENERATION_INFERENCE,
        model_for=lambda _config: "tgi",
        multiple_choices=False,
        unknown_fields=_VLLM_ONLY,
        # TGI's Messages API reads only max_tokens: max_completion_tokens would be dropped, leaving TGI's default.
        renamed_fields=(("max_completion_tokens", "max_tokens"),),
    ),
    InferenceFramework.VLLM: OpenAiEngine(
        InferenceFramework.VLLM,
        model_for=lambda config: config.model_name,
        multiple_choices=True,
        unknown_fields=frozenset(),
    ),
}


def openai_engine_for(framework: InferenceFramework) -> OpenAiEngine:
    return ENGINES[framework]


@dataclass
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


# TGI's older finish reasons, in OpenAI's words.
_FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop"}


class OpenAiNormaliser:
    """Rewrites one request's engine answers: the gateway's ``id`` and ``created`` and the endpoint's name as
    ``model`` (TGI sends an empty id and its model path), OpenAI's finish reasons; collects ``usage``."""

    def __init__(self, kind: OpenAiKind, request_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self.kind = kind
        self._head = {"id": kind.wire.id_prefix + request_id, "created": created, "model": model}
        self._include_usage = include_usage
        self.usage = Usage()
        self.finished = False

    def response(self, body: object) -> JsonObject:
        """A whole (non-streamed) response."""
        body = _require_choices(body)
        self._take_usage(body)
        for choice in body["choices"]:
            _fix_finish_reason(choice)
        return {**body, **self._head, "object": self.kind.wire.object}

    def chunk(self, data: str) -> bytes | None:
        """One ``data:`` payload of the engine's stream as our SSE event, or None when there is nothing to pass on.
        Raises ``UpstreamError`` for an in-band engine error."""
        if data.strip() == "[DONE]":
            return None
        event = decode_event(data)
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise UpstreamError("The model server sent an unexpected stream event: choices is missing")
        for choice in choices:
            if _fix_finish_reason(choice):
                self.finished = True
        had_usage = self._take_usage(event)
        if not self._include_usage:
            event.pop("usage", None)
            if had_usage and not choices:
                return None  # the usage-only chunk the gateway asked for itself
        return b"data: " + orjson.dumps({**event, **self._head, "object": self.kind.wire.chunk_object}) + b"\n\n"

    def end(self) -> None:
        """The engine closed the stream; raises if it had not finished the completion."""
        if not self.finished:
            raise UpstreamError("The model server closed the stream before the completion finished.")

    def _take_usage(self, body: JsonObject) -> bool:
        usage = body.get("usage")
        if not isinstance(usage, dict):
            return False
        self.usage = Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))
        return True


def _fix_finish_reason(choice: object) -> bool:
    """OpenAI's finish reason in place; whether the choice finished."""
    if not isinstance(choice, dict) or choice.get("finish_reason") is None:
        return False
    reason = choice["finish_reason"]
    choice["finish_reason"] = _FINISH_REASONS.get(reason, reason)
    return True


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
