"""Completion dispatch for the gateway: admit a request (``domain.admission``) and send it to a replica.

``CompletionDispatcher.route(endpoint_name, caller, request)`` is the one call every synchronous way in makes
(``/v1/llm/completions-sync`` and ``-stream``, the OpenAI-compatible routes): it applies the admission rules and
answers where the request goes and which engine adapter speaks to it, or raises the 404/400/503 domain error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from model_engine_server.domain.admission import Admission
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, StreamDelta
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.inference.adapters import EngineAdapter, adapter_for
from model_engine_server.inference.upstream import UpstreamClient


@dataclass(frozen=True)
class CompletionRoute:
    endpoint: ModelEndpoint
    upstreams: list[str]
    adapter: EngineAdapter


class CompletionDispatcher:
    def __init__(self, admission: Admission, upstream: UpstreamClient) -> None:
        self._admission = admission
        self._upstream = upstream

    @property
    def upstream(self) -> UpstreamClient:
        return self._upstream

    async def route(self, endpoint_name: str, caller: str, request: CompletionRequest) -> CompletionRoute:
        """Where ``request`` goes; raises the admission errors (404 unknown or deleting, 400, 503 not ready)."""
        admitted = await self._admission.admit(endpoint_name, caller, request)
        endpoint = admitted.endpoint
        return CompletionRoute(endpoint, admitted.upstreams, adapter_for(endpoint.config.inference_framework))

    async def complete(self, route: CompletionRoute, request: CompletionRequest) -> CompletionOutput:
        return await self._upstream.complete(route.upstreams, route.adapter, request)

    def stream(self, route: CompletionRoute, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """The engine's deltas; close the iterator to cancel the generation."""
        return self._upstream.stream(route.upstreams, route.adapter, request)
