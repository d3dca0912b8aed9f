"""Completion dispatch for the gateway: admit a request (``domain.admission``) and send it to a replica.

``CompletionDispatcher.route(endpoint_name, caller, request)`` is the one call every synchronous way in makes
(``/v1/llm/completions-sync`` and ``-stream``, the OpenAI-compatible routes): it applies the admission rules and
answers where the request goes and which engine adapter speaks to it, or raises the 404/400/503 domain error.
``complete`` and ``stream`` pass the tenant's concurrency limit and the endpoint's fair queue (``tenancy.gate``) and
account the tokens used when the completion ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from model_engine_server.domain.admission import Admission
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, StreamDelta
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.inference.adapters import EngineAdapter, adapter_for
from model_engine_server.inference.upstream import UpstreamClient
from model_engine_server.tenancy.gate import CompletionGate


@dataclass(frozen=True)
class CompletionRoute:
    endpoint: ModelEndpoint
    upstreams: list[str]
    adapter: EngineAdapter
    caller: str = ""


class CompletionDispatcher:
    def __init__(self, admission: Admission, upstream: UpstreamClient, gate: CompletionGate | None = None) -> None:
        self._admission = admission
        self._upstream = upstream
        self._gate = gate  # tenants' limits, fair queueing and usage (None: none of these, e.g. in tests)

    @property
    def upstream(self) -> UpstreamClient:
        return self._upstream

    async def route(self, endpoint_name: str, caller: str, request: CompletionRequest) -> CompletionRoute:
        """Where ``request`` goes; raises the admission errors (404 unknown or deleting, 400, 503 not ready)."""
        admitted = await self._admission.admit(endpoint_name, caller, request)
        endpoint = admitted.endpoint
        adapter = adapter_for(endpoint.config.inference_framework)
        return CompletionRoute(endpoint, admitted.upstreams, adapter, caller)

    async def complete(self, route: CompletionRoute, request: CompletionRequest) -> CompletionOutput:
        if self._gate is None:
            return await self._upstream.complete(route.upstreams, route.adapter, request)
        async with self._gate.slot(route.caller, route.endpoint, len(route.upstreams)):
            output = await self._upstream.complete(route.upstreams, route.adapter, request)
        await self._gate.finished(
            route.caller, route.endpoint, output.num_prompt_tokens or 0, output.num_completion_tokens
        )
        return output

    def stream(self, route: CompletionRoute, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """The engine's deltas; close the iterator to cancel the generation."""
        if self._gate is None:
            return self._upstream.stream(route.upstreams, route.adapter, request)
        return self._gated_stream(self._gate, route, request)

    async def _gated_stream(
        self, gate: CompletionGate, route: CompletionRoute, request: CompletionRequest
    ) -> AsyncIterator[StreamDelta]:
        last: StreamDelta | None = None
        async with gate.slot(route.caller, route.endpoint, len(route.upstreams)):
            deltas = self._upstream.stream(route.upstreams, route.adapter, request)
            try:
                async for last in deltas:
                    yield last
            finally:
                await deltas.aclose()  # type: ignore[attr-defined]
        if last is not None and last.finished:
            await gate.finished(
                route.caller, route.endpoint, last.num_prompt_tokens or 0, last.num_completion_tokens or 0
            )
