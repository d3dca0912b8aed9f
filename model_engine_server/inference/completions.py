"""Completion dispatch for the gateway: admit a request (``domain.admission``) and send it to a replica.

``CompletionDispatcher.route(endpoint_name, caller, request)`` is the one call every synchronous way in makes
(``/v1/llm/completions-sync`` and ``-stream``, the OpenAI-compatible routes): it applies the admission rules and
answers where the request goes and which engine adapter speaks to it, or raises the 404/400/503 domain error.
``complete`` and ``stream`` pass the tenant's concurrency limit and the endpoint's fair queue (``tenancy.gate``) and
account the tokens used when the completion ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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

    @asynccontextmanager
    async def running(self, route: CompletionRoute) -> AsyncIterator[None]:
        """Hold the caller's concurrency slot and a place at the endpoint (its fair queue) while the body runs.
        Every way a completion reaches an engine (native and OpenAI routes) runs inside this."""
        if self._gate is None:
            yield
            return
        async with self._gate.slot(route.caller, route.endpoint, len(route.upstreams)):
            yield

    async def finished(self, route: CompletionRoute, prompt_tokens: int | None, completion_tokens: int | None) -> None:
        """A completion ended: count its tokens (usage, the tenant's token budget); unknown counts count as 0."""
        if self._gate is not None:
            await self._gate.finished(route.caller, route.endpoint, prompt_tokens or 0, completion_tokens or 0)

    async def complete(self, route: CompletionRoute, request: CompletionRequest) -> CompletionOutput:
        async with self.running(route):
            output = await self._upstream.complete(route.upstreams, route.adapter, request)
        await self.finished(route, output.num_prompt_tokens, output.num_completion_tokens)
        return output

    async def stream(self, route: CompletionRoute, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """The engine's deltas; close the iterator to cancel the generation."""
        last: StreamDelta | None = None
        async with self.running(route):
            deltas = self._upstream.stream(route.upstreams, route.adapter, request)
            try:
                async for last in deltas:
                    yield last
            finally:
                await deltas.aclose()  # type: ignore[attr-defined]
        if last is not None and last.finished:
            await self.finished(route, last.num_prompt_tokens, last.num_completion_tokens)
