"""``POST /v1/llm/completions-sync`` and ``/v1/llm/completions-stream``: route to a replica, map the result.

Errors before the first streamed event (unknown endpoint, not ready, bad input, engine refused) are ordinary HTTP
errors through ``api/errors.py``; after it they are the in-band error event of ``api/sse.py``.
"""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from starlette.responses import StreamingResponse

from model_engine_server.api import sse
from model_engine_server.api.completion_metrics import RequestObservation, count_rejected
from model_engine_server.api.completion_schemas import (
    CompletionRequestBody,
    CompletionSyncResponse,
    sync_response_payload,
)
from model_engine_server.api.deps import CallerDep, CompletionDispatcherDep, SettingsDep
from model_engine_server.api.errors import status_for
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.exceptions import DomainError
from model_engine_server.inference.completions import CompletionDispatcher, CompletionRoute

router = APIRouter(prefix="/v1/llm", tags=["completions"])

EndpointNameQuery = Annotated[str, Query(min_length=1, description="The model endpoint to send the prompt to.")]


async def _route(
    dispatcher: CompletionDispatcher, kind: str, name: str, caller: str, request: CompletionRequest
) -> CompletionRoute:
    try:
        return await dispatcher.route(name, caller, request)
    except DomainError as exc:
        count_rejected(kind, status_for(exc))
        raise


@router.post("/completions-sync", response_model=CompletionSyncResponse)
async def create_completion_sync(
    body: CompletionRequestBody,
    model_endpoint_name: EndpointNameQuery,
    caller: CallerDep,
    dispatcher: CompletionDispatcherDep,
) -> Response:
    """Complete the prompt and answer with the whole text and its token counts."""
    started = time.perf_counter()
    request = body.to_domain()
    route = await _route(dispatcher, "sync", model_endpoint_name, caller, request)
    observation = RequestObservation("sync", route.endpoint.id, started)
    with observation.measuring():
        output = await dispatcher.complete(route, request)
        observation.tokens(output.num_prompt_tokens, output.num_completion_tokens)
    payload = sync_response_payload(uuid.uuid4().hex, output)
    return Response(orjson.dumps(payload), media_type="application/json")


@router.post(
    "/completions-stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, one per token."}},
)
async def create_completion_stream(
    body: CompletionRequestBody,
    model_endpoint_name: EndpointNameQuery,
    caller: CallerDep,
    dispatcher: CompletionDispatcherDep,
    settings: SettingsDep,
) -> StreamingResponse:
    """Stream the completion token by token as Server-Sent Events; the last event has ``finished: true``."""
    started = time.perf_counter()
    request = body.to_domain()
    request_id = uuid.uuid4().hex
    ping_seconds = settings.stream_keepalive_seconds

    async def start(route: CompletionRoute) -> StreamingResponse:
        observation = RequestObservation("stream", route.endpoint.id, started)
        deltas = dispatcher.stream(route, request)
        return await sse.open_completion_stream(request_id, deltas, observation, ping_seconds=ping_seconds)

    admitting = _route(dispatcher, "stream", model_endpoint_name, caller, request)
    return await sse.stream_when_admitted(admitting, start, partial(sse.error_event, request_id), ping_seconds)
