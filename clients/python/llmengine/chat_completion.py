"""Chat completions: ``ChatCompletion.create`` / ``acreate`` (whole or streamed) on the gateway's OpenAI-compatible
``/v2/chat/completions`` route, with typed responses.

    from llmengine import ChatCompletion

    reply = ChatCompletion.create(model="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=20)
    print(reply.choices[0].message.content)          # or reply.output.text
    for chunk in ChatCompletion.create(model="demo", messages=[...], stream=True):
        print(chunk.text, end="")
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Mapping
from types import TracebackType
from typing import Any

import pydantic

from llmengine import _transport
from llmengine._constants import COMPLETION_TIMEOUT
from llmengine._core.request_specs import RequestSpec, resolve_model
from llmengine._core.responses import parse_body
from llmengine.chat_types import ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse
from llmengine.errors import MalformedResponseError, ServerError, ValidationError

CHAT_COMPLETIONS_PATH = "v2/chat/completions"


def _request(arguments: dict[str, Any]) -> RequestSpec:
    """The request from a public method's arguments (its ``locals()`` on entry), validated before sending."""
    fields = {name: arguments[name] for name in ChatCompletionRequest.model_fields if name in arguments}
    fields.update(arguments["kwargs"])
    fields["model"] = resolve_model(arguments["model"], arguments["model_name"])
    try:
        body = ChatCompletionRequest.model_validate(fields).model_dump(mode="json", exclude_none=True)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ValidationError(f"invalid chat completion request: {problems}") from None
    headers: Mapping[str, str] = arguments["request_headers"] or {}
    return RequestSpec("POST", CHAT_COMPLETIONS_PATH, arguments["timeout"], json=body, headers=dict(headers))


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


class ChatCompletion:
    """Chat completions from a model endpoint. ``model`` names the endpoint (``model_name`` is an alias);
    ``messages`` are ``{"role", "content"}`` dicts (system, user, assistant, tool). Sampling arguments follow
    OpenAI's API (``max_tokens``, ``temperature`` 0–2, ``top_p``, ``stop``, ``seed``, penalties); others, such as
    vLLM's ``top_k``, go as keyword arguments. ``timeout`` bounds the wait (for streams, for each chunk)."""

    @classmethod
    def create(
        cls,
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
    ) -> ChatCompletionResponse | ChatCompletionStream:
        """A ``ChatCompletionResponse``; with ``stream=True`` a ``ChatCompletionStream`` of ``ChatCompletionChunk``."""
        spec = _request(locals())
        if stream:
            return ChatCompletionStream(_transport.stream_events(_streamed(spec)))
        return parse_body(_transport.request(spec), ChatCompletionResponse)

    @classmethod
    async def acreate(
        cls,
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
    ) -> ChatCompletionResponse | AsyncChatCompletionStream:
        """The async twin of ``create``; with ``stream=True`` it returns an ``AsyncChatCompletionStream``."""
        spec = _request(locals())
        if stream:
            return AsyncChatCompletionStream(_transport.astream_events(_streamed(spec)))
        return parse_body(await _transport.arequest(spec), ChatCompletionResponse)


def _streamed(spec: RequestSpec) -> RequestSpec:
    body = {**spec.json, "stream": True, "stream_options": {"include_usage": True}}
    return RequestSpec(spec.method, spec.path, spec.timeout, json=body, headers=spec.headers)


def _chunks(events: Generator[str, None, None]) -> Generator[ChatCompletionChunk, None, None]:
    try:
        for data in events:
            chunk = parse_chunk(data)
            if chunk is None:
                return
            yield chunk
    finally:
        events.close()


async def _achunks(events: AsyncGenerator[str, None]) -> AsyncGenerator[ChatCompletionChunk, None]:
    try:
        async for data in events:
            chunk = parse_chunk(data)
            if chunk is None:
                return
            yield chunk
    finally:
        await events.aclose()


class ChatCompletionStream(Iterator[ChatCompletionChunk]):
    """Chunks as they are generated; the last carries ``usage``. Closing it (or leaving a ``with`` block) closes the
    connection, which stops the generation."""

    def __init__(self, events: Generator[str, None, None]) -> None:
        self._chunks = _chunks(events)

    def __iter__(self) -> ChatCompletionStream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def __enter__(self) -> ChatCompletionStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class AsyncChatCompletionStream(AsyncIterator[ChatCompletionChunk]):
    def __init__(self, events: AsyncGenerator[str, None]) -> None:
        self._chunks = _achunks(events)

    def __aiter__(self) -> AsyncChatCompletionStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncChatCompletionStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
