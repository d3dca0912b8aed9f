"""The OpenAI-compatible API: ``POST /v1/chat/completions`` and ``/v1/completions`` (also at llm-engine's
``/v2/...`` paths), ``GET /v1/models`` and ``/v1/models/{model}``. ``model`` is the endpoint's name.

Admission is the native routes' (``CompletionDispatcher.route``: the endpoint exists and the caller may call it, it
is ready, the budget fits the context); the request then goes to the engine's own OpenAI route through the pooled
upstream client, rewritten for that engine (``inference/openai_adapters.py``). Streams share the native streaming
proxy (``api/sse.py``): keep-alive pings, cancellation on disconnect, one in-band error chunk then ``[DONE]``.
Every error is OpenAI's envelope (``api/openai_errors.py``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Response
from starlette.responses import StreamingResponse

from model_engine_server.api import sse
from model_engine_server.api.completion_metrics import RequestObservation, count_rejected
from model_engine_server.api.deps import CallerDep, CompletionDispatcherDep, ServicesDep, SettingsDep
from model_engine_server.api.errors import status_for
from model_engine_server.api.openai_errors import OpenAiRoute, error_chunk
from model_engine_server.api.openai_schemas import ChatCompletionBody, CompletionBody, OpenAiBody
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import DomainError, EndpointDeletingError
from model_engine_server.inference.completions import CompletionDispatcher, CompletionRoute
from model_engine_server.inference.openai_adapters import (
    DONE,
    OpenAiKind,
    OpenAiNormaliser,
    merge_responses,
    openai_engine_for,
)
from model_engine_server.inference.upstream import UpstreamClient, decode_json

router = APIRouter(tags=["openai"], route_class=OpenAiRoute)
PROTOCOL = "openai"


class OpenAiFormat:
    """Chunks arrive already encoded; an error after the first one is one error chunk, and every stream ends with
    ``[DONE]``."""

    def event(self, item: bytes) -> bytes:
        return item

    def is_last(self, _item: bytes) -> bool:
        return False

    def error(self, status_code: int, message: str) -> bytes:
        return error_chunk(status_code, message) + DONE

    def end(self) -> bytes:
        return DONE


@router.post("/v1/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
@router.post("/v2/chat/completions", summary="Create a chat completion (OpenAI-compatible)")
async def create_chat_completion(
    body: ChatCompletionBody, caller: CallerDep, dispatcher: CompletionDispatcherDep, settings: SettingsDep
) -> Response:
    """Chat with the model endpoint named by ``model``; ``stream: true`` answers with Server-Sent Events."""
    return await _proxy(OpenAiKind.CHAT, body, caller, dispatcher, settings.stream_keepalive_seconds)


@router.post("/v1/completions", summary="Create a completion (OpenAI-compatible)")
@router.post("/v2/completions", summary="Create a completion (OpenAI-compatible)")
async def create_completion(
    body: CompletionBody, caller: CallerDep, dispatcher: CompletionDispatcherDep, settings: SettingsDep
) -> Response:
    """Complete ``prompt`` with the model endpoint named by ``model``; ``stream: true`` answers with Server-Sent
    Events."""
    return await _proxy(OpenAiKind.COMPLETIONS, body, caller, dispatcher, settings.stream_keepalive_seconds)


@router.get("/v1/models", summary="List the models (endpoints) the caller may use")
async def list_models(caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    endpoints = await services.endpoints.list_for_inference(caller)
    cards = [
        _model_card(endpoint) for endpoint in endpoints if endpoint.status is not EndpointStatus.DELETE_IN_PROGRESS
    ]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model}", summary="Describe one model (endpoint)")
async def get_model(model: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    endpoint = await services.endpoints.get_for_inference(model, caller)
    if endpoint.status is EndpointStatus.DELETE_IN_PROGRESS:
        raise EndpointDeletingError(model)  # as a completion would answer
    return _model_card(endpoint)


def _model_card(endpoint: ModelEndpoint) -> dict[str, Any]:
    # owned_by stays generic: in open auth mode an owner name is its API key.
    return {
        "id": endpoint.name,
        "object": "model",
        "created": int(endpoint.created_at.timestamp()),
        "owned_by": "llm-engine",
    }


async def _proxy(
    kind: OpenAiKind, body: OpenAiBody, caller: str, dispatcher: CompletionDispatcher, ping_seconds: float
) -> Response:
    started = time.perf_counter()
    label = "stream" if body.streamed else "sync"
    admitting = _admit(kind, body, caller, dispatcher, label)
    normaliser = OpenAiNormaliser(
        kind, uuid.uuid4().hex, int(time.time()), body.model, include_usage=body.include_usage
    )
    upstream = dispatcher.upstream
    if body.streamed:

        async def start(admitted: tuple[CompletionRoute, list[bytes]]) -> StreamingResponse:
            route, contents = admitted
            observation = RequestObservation(label, route.endpoint.id, started, protocol=PROTOCOL)
            data = upstream.stream_data(route.upstreams, kind.wire.path, contents[0], body.routing_prompt())
            chunks = _chunks(data, normaliser, observation, dispatcher, route)
            return await sse.open_event_stream(chunks, OpenAiFormat(), observation, ping_seconds)

        # Held while the endpoint wakes from zero workers: ": ping" comments until it can answer.
        return await sse.stream_when_admitted(admitting, start, OpenAiFormat().error, ping_seconds)
    route, contents = await admitting
    observation = RequestObservation(label, route.endpoint.id, started, protocol=PROTOCOL)
    with observation.measuring():
        async with dispatcher.running(route):  # the tenant's concurrency limit and the endpoint's fair queue
            answers = await _post_all(upstream, route.upstreams, kind.wire.path, contents, body.routing_prompt())
        payload = normaliser.response(merge_responses([decode_json(raw) for raw in answers], body.n or 1))
        observation.tokens(normaliser.usage.prompt_tokens, normaliser.usage.completion_tokens)
    await dispatcher.finished(route, normaliser.usage.prompt_tokens, normaliser.usage.completion_tokens)
    return Response(orjson.dumps(payload), media_type="application/json")


async def _admit(
    kind: OpenAiKind, body: OpenAiBody, caller: str, dispatcher: CompletionDispatcher, label: str
) -> tuple[CompletionRoute, list[bytes]]:
    """Where the request goes and the engine request bodies it becomes; the admission errors are counted."""
    try:
        fields = body.upstream_fields()
        route = await dispatcher.route(body.model, caller, body.admission_request())
        engine = openai_engine_for(route.endpoint.config.inference_framework)
        contents = [orjson.dumps(one) for one in engine.request_bodies(kind, fields, route.endpoint.config)]
    except DomainError as exc:
        count_rejected(label, status_for(exc), PROTOCOL)
        raise
    return route, contents


async def _post_all(
    upstream: UpstreamClient, upstreams: list[str], path: str, contents: list[bytes], prompt: str | None
) -> list[bytes]:
    """Every request's answer, sent concurrently; the first failure cancels the others."""
    if len(contents) == 1:
        return [await upstream.post(upstreams, path, contents[0], prompt)]
    tasks = [asyncio.ensure_future(upstream.post(upstreams, path, content, prompt)) for content in contents]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def _chunks(
    data: AsyncGenerator[str],
    normaliser: OpenAiNormaliser,
    observation: RequestObservation,
    dispatcher: CompletionDispatcher,
    route: CompletionRoute,
) -> AsyncIterator[bytes]:
    """The engine's stream as our chunks; closing this closes the upstream stream."""
    try:
        async with dispatcher.running(route):
            async for payload in data:
                chunk = normaliser.chunk(payload)
                if chunk is not None:
                    yield chunk
        normaliser.end()
        observation.tokens(normaliser.usage.prompt_tokens, normaliser.usage.completion_tokens)
    finally:
        await data.aclose()
    await dispatcher.finished(route, normaliser.usage.prompt_tokens, normaliser.usage.completion_tokens)
