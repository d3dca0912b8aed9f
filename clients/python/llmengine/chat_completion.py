"""Chat completions: ``ChatCompletion.create`` / ``acreate`` (whole or streamed) on the gateway's OpenAI-compatible
``/v2/chat/completions`` route, with typed responses.

    from llmengine import ChatCompletion

    reply = ChatCompletion.create(model="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=20)
    print(reply.choices[0].message.content)          # or reply.output.text
    for chunk in ChatCompletion.create(model="demo", messages=[...], stream=True):
        print(chunk.text, end="")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Generator, Mapping
from typing import Any, Protocol, TypeAlias, TypeVar

import pydantic

from llmengine import _transport
from llmengine._constants import COMPLETION_TIMEOUT
from llmengine._core.request_specs import RequestSpec, resolve_model
from llmengine._core.responses import parse_body
from llmengine._faces import public_method
from llmengine.chat_types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from llmengine.errors import MalformedResponseError, ServerError, ValidationError
from llmengine.streaming import AsyncEventStream, EventStream

CHAT_COMPLETIONS_PATH = "v2/chat/completions"
R_co = TypeVar("R_co", covariant=True)


def _request(arguments: dict[str, Any]) -> RequestSpec:
    """The request from a call's arguments (every parameter by name), validated before sending."""
    fields = {name: arguments[name] for name in ChatCompletionRequest.model_fields if name in arguments}
    fields.update(arguments["kwargs"])
    fields["model"] = resolve_model(arguments["model"], arguments["model_name"])
    try:
        body = ChatCompletionRequest.model_validate(fields).model_dump(mode="json", exclude_none=True)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ValidationError(f"invalid chat completion request: {problems}") from None
    if arguments["stream"]:
        body.update(stream=True, stream_options={"include_usage": True})
    headers: Mapping[str, str] = arguments["request_headers"] or {}
    return RequestSpec("POST", CHAT_COMPLETIONS_PATH, arguments["timeout"], json=body, headers=dict(headers))


class ChatCall(Protocol[R_co]):
    """The parameters of ``ChatCompletion.create`` (``R_co``: response or stream) and ``acreate`` (awaitables)."""

    def __call__(
        self,
        model: str | None = None,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: str | list[str] | None = None,
        seed: int | None = None,
        presence_penalty: float | None = None,
        frequency_penalty: float | None = None,
        timeout: float = COMPLETION_TIMEOUT,
        stream: bool = False,
        request_headers: dict[str, str] | None = None,
        *,
        model_name: str | None = None,
        **kwargs: Any,
    ) -> R_co: ...


def _create(spec: RequestSpec) -> ChatCompletionResponse | ChatCompletionStream:
    """A ``ChatCompletionResponse``; with ``stream=True`` a ``ChatCompletionStream`` of ``ChatCompletionChunk``."""
    if spec.json.get("stream"):
        return ChatCompletionStream(_transport.stream_events(spec))
    return parse_body(_transport.request(spec), ChatCompletionResponse)


async def _acreate(spec: RequestSpec) -> ChatCompletionResponse | AsyncChatCompletionStream:
    """The async twin of ``create``; with ``stream=True`` it returns an ``AsyncChatCompletionStream``."""
    if spec.json.get("stream"):
        return AsyncChatCompletionStream(_transport.astream_events(spec))
    return parse_body(await _transport.arequest(spec), ChatCompletionResponse)


def parse_chunk(data: str) -> ChatCompletionChunk | None:
    """One ``data:`` payload; None for the closing ``[DONE]``. An in-band error raises ``ServerError``."""
    if data.strip() == "[DONE]":
        return None
    try:
        chunk = ChatCompletionChunk.model_validate_json(data)
    except pydantic.ValidationError as exc:
        raise MalformedResponseError(f"invalid chat stream chunk {data[:200]!r}: {exc}") from None
    if chunk.error is not None:
        raise ServerError(502, f"the completion failed after it started: {chunk.error.get('message')}")
    return chunk


_AsyncReply: TypeAlias = "Awaitable[ChatCompletionResponse | AsyncChatCompletionStream]"  # streams are below


class ChatCompletion:
    """Chat completions from a model endpoint. ``model`` names the endpoint (``model_name`` is an alias);
    ``messages`` are ``{"role", "content"}`` dicts (system, user, assistant, tool). Sampling arguments follow
    OpenAI's API (``max_tokens``, ``temperature`` 0–2, ``top_p``, ``stop``, ``seed``, penalties); others, such as
    vLLM's ``top_k``, go as keyword arguments. ``timeout`` bounds the wait (for streams, for each chunk)."""

    create: ChatCall[ChatCompletionResponse | ChatCompletionStream] = public_method(ChatCall, _request, _create)
    acreate: ChatCall[_AsyncReply] = public_method(ChatCall, _request, _acreate)


class ChatCompletionStream(EventStream[ChatCompletionChunk]):
    """Chunks as they are generated; the last carries ``usage``. Closing it (or leaving a ``with`` block) closes the
    connection, which stops the generation."""

    def __init__(self, events: Generator[str, None, None]) -> None:
        super().__init__(events, parse_chunk)


class AsyncChatCompletionStream(AsyncEventStream[ChatCompletionChunk]):
    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        super().__init__(events, parse_chunk)
