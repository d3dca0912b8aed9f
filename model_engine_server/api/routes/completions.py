"""``POST /v1/llm/completions-sync`` and ``/v1/llm/completions-stream``: route to a replica, map the result.

Errors before the first streamed event (unknown endpoint, not ready, bad input, engine refused) are ordinary HTTP
errors through ``api/errors.py``; after it they are the in-band error event of ``api/sse.py``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Response
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


@dataclass(frozen=True)
class CompletionCall:
    """What both completion routes start from: the request in domain terms, who sends it, and when it arrived."""

    request: CompletionRequest
    endpoint_name: str
    caller: str
    dispatcher: CompletionDispatcher
    started: float

    async def route(self, kind: str) -> CompletionRoute:
        try:
            return await self.dispatcher.route(self.endpoint_name, self.caller, self.request)
        except DomainError as exc:
            count_rejected(kind, status_for(exc))
            raise


def _completion_call(
    body: CompletionRequestBody,
    model_endpoint_name: EndpointNameQuery,
    caller: CallerDep,
    dispatcher: CompletionDispatcherDep,
) -> CompletionCall:
    return CompletionCall(body.to_domain(), model_endpoint_name, caller, dispatcher, time.perf_counter())


CompletionCallDep = Annotated[CompletionCall, Depends(_completion_call)]


@router.post("/completions-sync", response_model=CompletionSyncResponse)
async def create_completion_sync(call: CompletionCallDep) -> Response:
    """Complete the prompt and answer with the whole text and its token counts."""
    route = await call.route("sync")
    observation = RequestObservation("sync", route.endpoint.id, call.started)
    with observation.measuring():
        output = await call.dispatcher.complete(route, call.request)
        observation.tokens(output.num_prompt_tokens, output.num_completion_tokens)
    payload = sync_response_payload(uuid.uuid4().hex, output)
    return Response(orjson.dumps(payload), media_type="application/json")


@router.post(
    "/completions-stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events, one per token."}},
)
async def create_completion_stream(call: CompletionCallDep, settings: SettingsDep) -> StreamingResponse:
    """Stream the completion token by token as Server-Sent Events; the last event has ``finished: true``."""
    request_id = uuid.uuid4().hex
    ping_seconds = settings.stream_keepalive_seconds

    async def start(route: CompletionRoute) -> StreamingResponse:
        observation = RequestObservation("stream", route.endpoint.id, call.started)
        deltas = call.dispatcher.stream(route, call.request)
        return await sse.open_completion_stream(request_id, deltas, observation, ping_seconds=ping_seconds)

    return await sse.stream_when_admitted(
        call.route("stream"), start, partial(sse.error_event, request_id), ping_seconds
    )
