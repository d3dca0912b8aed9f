"""``POST /v1/llm/completions-sync`` and ``/v1/llm/completions-stream``: route to a replica, map the result.

Errors before the first streamed event (unknown endpoint, not ready, bad input, engine refused) are ordinary HTTP
errors through ``api/errors.py``; after it they are the in-band error event of ``api/sse.py``.
"""

from __future__ import annotations

import time
import uuid
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


async def _admit(
    dispatcher: CompletionDispatcher, kind: str, name: str, caller: str, body: CompletionRequestBody
) -> tuple[CompletionRequest, CompletionRoute, RequestObservation]:
    """The request in the platform's terms, the replica it goes to and its observation (timed from now); a refused
    request is counted as such."""
    started = time.perf_counter()
    request = body.to_domain()
    try:
        route = await dispatcher.route(name, caller, request)
    except DomainError as exc:
        count_rejected(kind, status_for(exc))
        raise
    return request, route, RequestObservation(kind, route.endpoint.id, started)


@router.post("/completions-sync", response_model=CompletionSyncResponse)
async def create_completion_sync(
    body: CompletionRequestBody,
    model_endpoint_name: EndpointNameQuery,
    caller: CallerDep,
    dispatcher: CompletionDispatcherDep,
) -> Response:
    """Complete the prompt and answer with the whole text and its token counts."""
    request, route, observation = await _admit(dispatcher, "sync", model_endpoint_name, caller, body)
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
    request, route, observation = await _admit(dispatcher, "stream", model_endpoint_name, caller, body)
    deltas = dispatcher.stream(route, request)
    return await sse.open_completion_stream(
        uuid.uuid4().hex, deltas, observation, ping_seconds=settings.stream_keepalive_seconds
    )
