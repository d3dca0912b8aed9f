"""TGI's OpenAI routes for the instant server (``testing/tgi/server.py``): ``POST /v1/chat/completions`` (the
Messages API) and ``POST /v1/completions``, in TGI's shapes — an empty ``id``, ``role`` in every delta, ``"usage":
null`` until a usage-only chunk (when ``stream_options.include_usage``), then ``[DONE]``; errors as TGI writes them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from model_engine_server.testing.tgi.server import InstantTgiServer

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions")


def messages_api_answer(server: InstantTgiServer, path: str, body: dict[str, Any]) -> tuple[bytes | None, list[bytes]]:
    """(non-streamed body, or None when streaming; stream events) of TGI's OpenAI routes."""
    chat = path == "/v1/chat/completions"
    parameters = {"max_new_tokens": body.get("max_tokens") or 100, "stop": stop_list(body.get("stop"))}
    tokens, text, finish_reason = server.generate({"parameters": parameters})
    reason = "length" if finish_reason == "length" else "stop"
    if chat:
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in body.get("messages") or [])
    else:
        prompt_tokens = len(str(body.get("prompt")).split())
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(tokens)}
    usage["total_tokens"] = prompt_tokens + len(tokens)
    head = {"id": "", "created": 1700000000, "model": "instant-tgi", "system_fingerprint": "instant-native"}
    if not body.get("stream"):
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice |= {"logprobs": None, "finish_reason": reason}
        kind = "chat.completion" if chat else "text_completion"
        return orjson.dumps({"object": kind, **head, "choices": [choice], "usage": usage}), []
    events = []
    for index, token in enumerate(tokens):
        if server.fail_after is not None and index == server.fail_after:
            events.append(
                sse({"error": "Request failed during generation: simulated failure", "error_type": "generation"})
            )
            return None, events
        content = "" if token["special"] else token["text"]
        last = index == len(tokens) - 1
        delta: dict[str, Any] = {"delta": {"role": "assistant", "content": content}} if chat else {"text": content}
        choice = {"index": 0, **delta, "logprobs": None, "finish_reason": reason if last else None}
        kind = "chat.completion.chunk" if chat else "text_completion"
        events.append(sse({"object": kind, **head, "choices": [choice], "usage": None}))
    if (body.get("stream_options") or {}).get("include_usage"):
        kind = "chat.completion.chunk" if chat else "text_completion"
        events.append(sse({"object": kind, **head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return None, events


def messages_api_problem(path: str, body: dict[str, Any], max_total_tokens: int) -> tuple[int, dict[str, Any]] | None:
    """TGI's checks on its OpenAI routes (it answers 422 with ``{"error", "error_type"}``)."""
    problem = None
    temperature = body.get("temperature")
    max_tokens = body.get("max_tokens")
    if path == "/v1/chat/completions" and not body.get("messages"):
        problem = "missing field `messages`"
    elif path == "/v1/completions" and not isinstance(body.get("prompt"), str | list):
        problem = "missing field `prompt`"
    elif temperature is not None and not 0 <= temperature <= 2:
        problem = "`temperature` must be >= 0 and <= 2"
    elif max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens <= 0):
        problem = "`max_new_tokens` must be strictly positive"
    elif isinstance(max_tokens, int) and max_tokens >= max_total_tokens:
        problem = (
            f"`inputs` tokens + `max_new_tokens` must be <= {max_total_tokens}. Given: {max_tokens} `max_new_tokens`"
        )
    return None if problem is None else (422, {"error": problem, "error_type": "validation"})


def stop_list(stop: object) -> list[str]:
    return [stop] if isinstance(stop, str) else [str(s) for s in stop] if isinstance(stop, list) else []


def sse(event: dict[str, Any]) -> bytes:
    return b"data:" + orjson.dumps(event) + b"\n\n"
