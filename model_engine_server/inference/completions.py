"""Completion dispatch: find the endpoint a caller may use, check it can serve, and send the request to a replica.

Shared by the gateway (sync and stream) and the Celery worker (async), so all three apply the same rules:
- the endpoint must be visible to the caller (its owner, or anyone when ``public_inference``), else 404;
- it must be READY with at least one ready replica, else 503 with the reason;
- ``max_new_tokens`` must fit the model's context length (from the zoo), else 400.

Endpoint lookups are cached for a second: the hot path then touches no database, and a status change or a delete is
still seen within about that second (the orchestrator's replica list, consulted on every request, is always
current). An expired entry is refreshed by one shared lookup, so a burst of requests never queues on the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from model_engine_server.domain.completions import CompletionOutput, CompletionRequest, StreamDelta, check_fits_context
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import DomainError, EndpointNotReadyError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import Orchestrator
from model_engine_server.inference.adapters import EngineAdapter, adapter_for
from model_engine_server.inference.upstream import UpstreamClient

# (endpoint name, caller) -> the endpoint, or EndpointNotFoundError; e.g. EndpointRegistry.get_for_inference.
EndpointLookup = Callable[[str, str], Awaitable[ModelEndpoint]]

ENDPOINT_CACHE_SECONDS = 1.0
_STALE_FACTOR = 10  # an entry older than this many cache periods is not served, even once


@dataclass(frozen=True)
class CompletionRoute:
    endpoint: ModelEndpoint
    upstreams: list[str]
    adapter: EngineAdapter


class CompletionDispatcher:
    def __init__(
        self,
        lookup: EndpointLookup,
        orchestrator: Orchestrator,
        upstream: UpstreamClient,
        zoo: ModelZoo | None = None,
        *,
        cache_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._orchestrator = orchestrator
        self._upstream = upstream
        self._zoo = zoo or ModelZoo()
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, ModelEndpoint]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[ModelEndpoint]] = {}

    @property
    def upstream(self) -> UpstreamClient:
        return self._upstream

    async def route(self, endpoint_name: str, caller: str, request: CompletionRequest) -> CompletionRoute:
        """Where ``request`` goes; raises the 404/503/400 domain errors described in the module docstring."""
        endpoint = await self._endpoint(endpoint_name, caller)
        try:
            return await self._route_to(endpoint, request)
        except EndpointNotReadyError:
            # The cached record may be behind a delete or a status change: ask the registry before answering 503
            # (a deleted endpoint must be a 404). Only the error path pays for this lookup.
            fresh = await asyncio.shield(self._refresh((endpoint_name, caller)))
            return await self._route_to(fresh, request)

    async def _route_to(self, endpoint: ModelEndpoint, request: CompletionRequest) -> CompletionRoute:
        self._check_limits(endpoint, request)
        if endpoint.status != EndpointStatus.READY:
            reason = f": {endpoint.status_reason}" if endpoint.status_reason else ""
            raise EndpointNotReadyError(
                f"Model endpoint {endpoint.name!r} is not ready (status {endpoint.status.value}){reason}."
            )
        upstreams = await self._orchestrator.upstreams(endpoint)
        if not upstreams:
            raise EndpointNotReadyError(f"Model endpoint {endpoint.name!r} has no ready replica right now.")
        return CompletionRoute(endpoint, upstreams, adapter_for(endpoint.config.inference_framework))

    async def complete(self, route: CompletionRoute, request: CompletionRequest) -> CompletionOutput:
        return await self._upstream.complete(route.upstreams, route.adapter, request)

    def stream(self, route: CompletionRoute, request: CompletionRequest) -> AsyncIterator[StreamDelta]:
        """The engine's deltas; close the iterator to cancel the generation."""
        return self._upstream.stream(route.upstreams, route.adapter, request)

    async def _endpoint(self, name: str, caller: str) -> ModelEndpoint:
        key = (name, caller)
        cached = self._cache.get(key)
        if cached is not None:
            age = self._clock() - cached[0]
            if age < self._cache_seconds:
                return cached[1]
            if age < self._cache_seconds * _STALE_FACTOR:
                # Serve the entry one more time while a single background lookup refreshes it: requests arriving
                # together at expiry would otherwise all queue on the database at once.
                self._refresh(key)
                return cached[1]
        try:
            return await asyncio.shield(self._refresh(key))
        except DomainError:
            raise
        except Exception:
            if cached is None:
                raise
            # The registry is unreachable (not: the endpoint is gone). Endpoints already known keep serving from
            # the last record read, so a database outage does not stop completions.
            return cached[1]

    def _refresh(self, key: tuple[str, str]) -> asyncio.Task[ModelEndpoint]:
        """One lookup per key at a time, shared by everyone waiting for it; it fills or clears the cache."""
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(*key))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._store(key, done))
        return task

    def _store(self, key: tuple[str, str], done: asyncio.Task[ModelEndpoint]) -> None:
        del self._pending[key]
        if done.cancelled():
            return
        error = done.exception()  # also marks the exception retrieved when nobody awaited it
        if isinstance(error, DomainError):
            self._cache.pop(key, None)  # e.g. deleted, or no longer visible: the next request asks again
        if error is not None:
            return  # an unreachable registry keeps the last record (see _endpoint)
        if len(self._cache) > 10_000:  # many distinct callers: drop everything rather than grow without bound
            self._cache.clear()
        self._cache[key] = (self._clock(), done.result())

    def _check_limits(self, endpoint: ModelEndpoint, request: CompletionRequest) -> None:
        entry = self._zoo.get(endpoint.config.model_name)
        if entry is not None:
            check_fits_context(request, entry.context_length, entry.name)
