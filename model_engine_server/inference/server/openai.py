"""OpenAI-compatible ``/v1/completions`` and ``/v1/chat/completions``, shaped as vLLM serves them.

Defaults follow vLLM: ``temperature`` 1.0 (sampling), ``max_tokens`` 16 for completions and the rest of the context
for chat; ``temperature`` 0 is greedy. Stop strings are cut from the output (OpenAI semantics, unlike TGI), which in
a stream means holding back the last few characters until they cannot start a stop string. Streams end with
``data: [DONE]``; ``stream_options.include_usage`` adds a final chunk carrying ``usage``.

Log-probabilities are those of the sampled tokens (chat ``logprobs: true``, completions ``logprobs: 0``), whole or
streamed, each chunk carrying its own tokens'; alternatives (``top_logprobs`` > 0, completions ``logprobs`` > 0) are
not computed and are refused with a 400 naming the field rather than answered without them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from model_engine_server.inference.server.events import ErrorEvent, Finished, GeneratedToken, TokenEvent
from model_engine_server.inference.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAiErrorBody,
    Usage,
    _OpenAiSampling,
)
from model_engine_server.inference.server.scheduler import QueueFullError
from model_engine_server.inference.server.service import Generation, InferenceService
from model_engine_server.inference.server.validation import GenerationRequestError, ValidRequest

DEFAULT_COMPLETION_MAX_TOKENS = 16
router = APIRouter(prefix="/v1")


def get_service(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.service
    return service


Service = Annotated[InferenceService, Depends(get_service)]


def error_response(status: int, message: str, error_type: str, param: str | None = None) -> JSONResponse:
    body = OpenAiErrorBody(message=message, type=error_type, param=param, code=status)
    return JSONResponse(body.model_dump(), status_code=status)


def _no_alternatives(param: str) -> JSONResponse:
    message = f"`{param}` > 0 is not supported by this server: it reports the sampled tokens' log-probabilities only"
    return error_response(400, message, "BadRequestError", param)


# A choice of a stream chunk: (text, finish reason or None, the tokens behind the text when log-probs were asked for).
ChoiceMaker = Callable[[str, str | None, list[GeneratedToken] | None], dict[str, Any]]


def _chat_logprobs(tokens: list[GeneratedToken]) -> dict[str, Any]:
    entries = [
        {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode()), "top_logprobs": []} for t in tokens
    ]
    return {"content": entries}


def _completion_logprobs(tokens: list[GeneratedToken], start: int) -> dict[str, Any]:
    texts = [t.text for t in tokens]
    return {
        "tokens": texts,
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": None,
        "text_offset": _offsets(start, texts),
    }


def _text_tokens(tokens: tuple[GeneratedToken, ...], length: int) -> list[GeneratedToken]:
    """The tokens whose text begins within the first ``length`` characters (the output, once a stop string was cut)."""
    kept, offset = [], 0
    for token in tokens:
        if token.special:
            continue
        if offset >= length:
            break
        kept.append(token)
        offset += len(token.text)
    return kept


def _finish_reason(finished: Finished, stopped: bool) -> str:
    return "length" if finished.reason == "length" and not stopped else "stop"


class StopTrimmer:
    """Cuts generated text at the first stop string, streaming only text that can no longer become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def push(self, delta: str, final: bool) -> str:
        if self.stopped:
            return ""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped, final = self.text[:cut], True, True
        end = len(self.text) if final else max(self.sent, len(self.text) - self.hold)
        out, self.sent = self.text[self.sent : end], end
        return out


def _validate(service: InferenceService, body: _OpenAiSampling, prompt_ids: list[int], max_tokens: int | None) -> Any:
    if body.n != 1:
        raise GenerationRequestError("only `n` = 1 is supported")
    temperature = 1.0 if body.temperature is None else body.temperature
    sampling = service.validator.sampling(
        seed=body.seed,
        do_sample=temperature > 0.0,
        temperature=temperature,
        top_k=body.top_k if body.top_k and body.top_k > 0 else None,  # vLLM uses -1 (and 0) for "off"
        top_p=body.top_p if body.top_p is not None and body.top_p < 1.0 else None,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty or None,
        presence_penalty=body.presence_penalty or None,
    )
    return service.validator.validate(prompt_ids, max_new_tokens=max_tokens, sampling=sampling, stop=body.stop_list())


def _submit(service: InferenceService, valid: ValidRequest, stream: bool) -> Generation:
    service.metrics.request_count.inc()
    return service.submit(valid, stream=stream)


def _usage(finished: Finished) -> dict[str, int]:
    usage = Usage(
        prompt_tokens=finished.input_length,
        completion_tokens=len(finished.tokens),
        total_tokens=finished.input_length + len(finished.tokens),
    )
    return usage.model_dump()


def _chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _openai_stream(
    generation: Generation,
    trimmer: StopTrimmer,
    make_choice: ChoiceMaker,
    base: dict[str, Any],
    include_usage: bool,
    first: dict[str, Any] | None = None,
    *,
    logprobs: bool = False,
) -> AsyncIterator[bytes]:
    if first is not None:
        yield _chunk({**base, "choices": [first]})
    pending: list[GeneratedToken] = []  # tokens generated since the last chunk (their text may be held back)
    async for event in generation.events():
        if isinstance(event, ErrorEvent):
            yield _chunk({"error": {"message": event.message, "type": "InternalServerError", "code": 500}})
            break
        finished = event.finished
        text = "" if event.token.special else event.token.text
        start = len(trimmer.text)  # characters generated before this token (the loop ends once a stop string cuts)
        delta = trimmer.push(text, final=finished is not None)
        # As a whole response counts them (``_text_tokens``): the tokens whose text begins before a stop string.
        if logprobs and text and start < len(trimmer.text):
            pending.append(event.token)
        if finished is None and trimmer.stopped:
            finished_reason: str | None = "stop"
        elif finished is not None:
            finished_reason = _finish_reason(finished, trimmer.stopped)
        else:
            finished_reason = None
        if delta or finished_reason:
            yield _chunk({**base, "choices": [make_choice(delta, finished_reason, pending if logprobs else None)]})
            pending = []
        if finished is not None and include_usage:
            yield _chunk({**base, "choices": [], "usage": _usage(finished)})
        if finished_reason:
            break
    yield b"data: [DONE]\n\n"


async def _collect(generation: Generation, http: Request) -> Finished | ErrorEvent:
    event = await generation.result(http.is_disconnected)
    if isinstance(event, ErrorEvent):
        return event
    assert isinstance(event, TokenEvent) and event.finished is not None
    return event.finished


def _run_errors(service: InferenceService, error: Exception) -> Response:
    if isinstance(error, GenerationRequestError):
        service.metrics.request_failure.labels("validation").inc()
        return error_response(400, error.message, "BadRequestError")
    service.metrics.request_failure.labels("overloaded").inc()
    return error_response(429, str(error), "TooManyRequests")


@router.get("/models")
async def models(service: Service) -> dict[str, Any]:
    model = {"id": service.info.model_id, "object": "model", "created": 0, "owned_by": "llm-engine"}
    return {"object": "list", "data": [model]}


@router.post("/completions")
async def completions(service: Service, body: CompletionRequest, http: Request) -> Response:
    if body.logprobs:
        return _no_alternatives("logprobs")
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            return error_response(400, "only one prompt per request is supported", "BadRequestError")
        prompt = prompt[0]
    try:
        if isinstance(prompt, str) and not prompt:
            raise GenerationRequestError("`prompt` cannot be empty")
        ids = service.validator.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        max_tokens = DEFAULT_COMPLETION_MAX_TOKENS if body.max_tokens is None else body.max_tokens
        valid = _validate(service, body, ids, max_tokens)
        generation = _submit(service, valid, body.stream)
    except (GenerationRequestError, QueueFullError) as error:
        return _run_errors(service, error)
    echo = prompt if body.echo and isinstance(prompt, str) else ""
    base = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model or service.info.model_id,
    }
    trimmer = StopTrimmer(body.stop_list())
    if body.stream:
        sent = len(echo)

        def choice(text: str, reason: str | None, tokens: list[GeneratedToken] | None) -> dict[str, Any]:
            nonlocal sent
            logprobs = None if tokens is None else _completion_logprobs(tokens, sent)
            sent += len(text)
            return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = {"index": 0, "text": echo, "logprobs": None, "finish_reason": None} if echo else None
        stream = _openai_stream(
            generation, trimmer, choice, base, include_usage, first, logprobs=body.logprobs is not None
        )
        return StreamingResponse(stream, media_type="text/event-stream")
    result = await _collect(generation, http)
    if isinstance(result, ErrorEvent):
        return error_response(500, result.message, "InternalServerError")
    text = trimmer.push(result.generated_text, final=True)
    logprobs = (
        None if body.logprobs is None else _completion_logprobs(_text_tokens(result.tokens, len(text)), len(echo))
    )
    choice_body = {
        "index": 0,
        "text": echo + text,
        "logprobs": logprobs,
        "finish_reason": _finish_reason(result, trimmer.stopped),
    }
    return JSONResponse({**base, "choices": [choice_body], "usage": _usage(result)})


def _offsets(start: int, texts: list[str]) -> list[int]:
    offsets = []
    for text in texts:
        offsets.append(start)
        start += len(text)
    return offsets


@router.post("/chat/completions")
async def chat_completions(service: Service, body: ChatCompletionRequest, http: Request) -> Response:
    if body.top_logprobs:
        return _no_alternatives("top_logprobs")
    try:
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        prompt = service.apply_chat_template(messages, body.chat_template)
        # The template already places the special tokens; adding them again would duplicate BOS on some models.
        ids: list[int] = service.runner.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        valid = _validate(service, body, ids, body.max_completion_tokens or body.max_tokens)
        generation = _submit(service, valid, body.stream)
    except (GenerationRequestError, QueueFullError) as error:
        return _run_errors(service, error)
    except Exception as error:  # a template that rejects these messages (e.g. roles out of order) is the caller's
        return error_response(400, f"Cannot apply the chat template: {error}", "BadRequestError")
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model or service.info.model_id,
    }
    trimmer = StopTrimmer(body.stop_list())
    if body.stream:

        def choice(text: str, reason: str | None, tokens: list[GeneratedToken] | None) -> dict[str, Any]:
            delta = {"content": text} if text else {}
            logprobs = None if tokens is None else _chat_logprobs(tokens)
            return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        chunk_base = {**base, "object": "chat.completion.chunk"}
        stream = _openai_stream(generation, trimmer, choice, chunk_base, include_usage, first, logprobs=body.logprobs)
        return StreamingResponse(stream, media_type="text/event-stream")
    result = await _collect(generation, http)
    if isinstance(result, ErrorEvent):
        return error_response(500, result.message, "InternalServerError")
    text = trimmer.push(result.generated_text, final=True)
    choice_body = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "logprobs": _chat_logprobs(_text_tokens(result.tokens, len(text))) if body.logprobs else None,
        "finish_reason": _finish_reason(result, trimmer.stopped),
    }
    return JSONResponse({**base, "choices": [choice_body], "usage": _usage(result)})
