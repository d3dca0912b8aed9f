"""Admission: may this completion run on this endpoint? One set of rules, one message per rule, for every way in
(sync, stream, async submit, the async worker, and the OpenAI routes and jobs built on them):

- the endpoint exists and the caller may use it (its owner, or anyone when ``public_inference``), else 404;
- it is not being deleted, else 404 (it will not come back);
- ``max_new_tokens``, and the prompt's words, fit the model's context length (from the zoo), else 400;
- it can serve: READY with at least one ready replica, else 503 with the reason. A request that waits in a queue
  (async submit) only needs an endpoint that can become ready: one whose servers failed is turned away at once;
- the caller's tenant has generated-token budget left (``check_tenant``, from ``tenancy``), else 429.

Every "cannot serve right now" goes through ``Admission.when_unavailable``: an endpoint that may run at zero workers
(``domain.autoscaling.is_wakeable``) is woken and the request waits for a replica (``domain.waking.Waker``) instead
of getting a 503 — or, for a queued task, woken while the task comes back later (``EndpointWakingError``). Every
admitted request, queued ones included, reports demand, which keeps its endpoint awake.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from model_engine_server.domain.autoscaling import is_asleep, is_wakeable
from model_engine_server.domain.completions import CompletionRequest, check_fits_context
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import (
    EndpointNotFoundError,
    EndpointNotReadyError,
    EndpointWakeTimeoutError,
    EndpointWakingError,
)
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import InferenceEndpoints, UpstreamResolver
from model_engine_server.domain.rules import check_not_deleting, status_reason_suffix
from model_engine_server.domain.ttl_cache import TtlCache
from model_engine_server.domain.waking import Waker

K = TypeVar("K", bound=Hashable)

# Endpoint records are cached for a second: the hot path then touches no database, and a status change or a delete is
# still seen within about that second (the replica list, consulted on every request, is always current).
ENDPOINT_CACHE_SECONDS = 1.0
_ENDPOINT_STALE_FACTOR = 10  # an entry older than this many cache periods is not served, even once
_ENDPOINT_CACHE_ENTRIES = 10_000  # many distinct callers: drop everything rather than grow without bound


def _endpoint_cache(
    lookup: Callable[[K], Awaitable[ModelEndpoint]], cache_seconds: float, clock: Callable[[], float]
) -> TtlCache[K, ModelEndpoint]:
    return TtlCache(lookup, cache_seconds, clock, _ENDPOINT_STALE_FACTOR, _ENDPOINT_CACHE_ENTRIES)


@dataclass(frozen=True)
class Admitted:
    """An admitted request's endpoint and the replicas (base URLs) it may go to."""

    endpoint: ModelEndpoint
    upstreams: list[str]


# --- the rules ---------------------------------------------------------------------------------------------------


def check_fits(endpoint: ModelEndpoint, request: CompletionRequest, zoo: ModelZoo) -> None:
    entry = zoo.get(endpoint.config.model_name)
    if entry is not None:
        check_fits_context(request, entry.context_length, entry.name)


def not_ready_reason(endpoint: ModelEndpoint) -> str:
    status = endpoint.status.value
    return f"Model endpoint {endpoint.name!r} is not ready (status {status}){status_reason_suffix(endpoint)}."


def no_replica_reason(endpoint: ModelEndpoint) -> str:
    return f"Model endpoint {endpoint.name!r} has no ready replica right now."


async def _no_tenant_limits(_caller: str) -> None:
    return None


# --- the one path ------------------------------------------------------------------------------------------------


class Admission:
    """Applies the rules above to the registry's record (through one short-lived cache) and the live replica list.

    Built once per process: the gateway admits by (endpoint name, caller), the worker by the endpoint id its task
    names (a new endpoint reusing a name does not inherit tasks).
    """

    def __init__(
        self,
        endpoints: InferenceEndpoints,
        resolver: UpstreamResolver,
        zoo: ModelZoo,
        *,
        cache_seconds: float = ENDPOINT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        check_tenant: Callable[[str], Awaitable[None]] = _no_tenant_limits,
        waker: Waker | None = None,
    ) -> None:
        self._waker = waker  # None: no scale from zero (an endpoint without replicas answers 503)
        self._check_tenant = check_tenant  # raises RateLimitExceededError (429) when the caller's budget is spent
        self._endpoints = endpoints
        self._resolver = resolver
        self._zoo = zoo
        self._for_caller = _endpoint_cache(self._lookup_for_caller, cache_seconds, clock)
        self._by_id = _endpoint_cache(self._lookup_by_id, cache_seconds, clock)

    async def admit(self, endpoint_name: str, caller: str, request: CompletionRequest) -> Admitted:
        """A request to run now (sync, stream, OpenAI routes): where it may go, or the 404/400/503/429 error."""
        admitted = await self._admit_now(self._for_caller, (endpoint_name, caller), request)
        await self._check_tenant(caller)
        await self._note_demand(admitted.endpoint)
        return admitted

    async def admit_to_queue(self, endpoint_name: str, caller: str, request: CompletionRequest) -> ModelEndpoint:
        """A request that waits in a queue (async submit): the endpoint, if it is ready or can become ready."""
        key = (endpoint_name, caller)
        endpoint = await self._for_caller.get(key)
        try:
            self._check_queueable(endpoint, request)
        except EndpointNotReadyError:  # the cached record may be stale: confirm before turning the caller away
            endpoint = await self._for_caller.refresh(key)
            self._check_queueable(endpoint, request)
        await self._check_tenant(caller)
        if self._waker is not None and is_asleep(endpoint):
            await self._waker.wake(endpoint)  # start the replica now: the task should not find it asleep
        else:
            await self._note_demand(endpoint)
        return endpoint

    async def admit_task(
        self, endpoint_id: str, endpoint_name: str, request: CompletionRequest, *, waking_since: float
    ) -> Admitted:
        """A queued request when it runs (the async worker): the same rules as ``admit``, by endpoint id, except
        that an endpoint at zero is woken without waiting: ``EndpointWakingError`` tells the task to come back later
        (a waiting task would hold a worker thread), until the cold-start bound counted from ``waking_since``."""
        key = (endpoint_id, endpoint_name)
        admitted = await self._admit_now(self._by_id, key, request, waking_since)
        await self._note_demand(admitted.endpoint)
        return admitted

    async def when_unavailable(
        self, endpoint: ModelEndpoint, reason: str, waking_since: float | None = None
    ) -> list[str]:
        """The endpoint cannot serve right now: wake it and wait for a replica when it may run at zero workers
        (or, given ``waking_since``, do not wait: see ``Waker.poke``), else 503 with ``reason``."""
        if self._waker is not None and is_wakeable(endpoint):
            if waking_since is None:
                return await self._waker.hold(endpoint)
            return await self._waker.poke(endpoint, waking_since)
        raise EndpointNotReadyError(reason)

    async def _note_demand(self, endpoint: ModelEndpoint) -> None:
        if self._waker is not None:
            await self._waker.note(endpoint)

    async def _admit_now(
        self, cache: TtlCache[K, ModelEndpoint], key: K, request: CompletionRequest, waking_since: float | None = None
    ) -> Admitted:
        endpoint = await cache.get(key)
        try:
            return await self._check_now(endpoint, request, waking_since)
        except (EndpointWakeTimeoutError, EndpointWakingError):
            raise  # it read fresh records already
        except EndpointNotReadyError:
            # The cached record may be behind a delete or a status change: ask the registry before answering 503
            # (a deleted endpoint must be a 404). Only the error path pays for this lookup.
            return await self._check_now(await cache.refresh(key), request, waking_since)

    async def _check_now(
        self, endpoint: ModelEndpoint, request: CompletionRequest, waking_since: float | None = None
    ) -> Admitted:
        check_not_deleting(endpoint)
        check_fits(endpoint, request, self._zoo)
        if endpoint.status is not EndpointStatus.READY:
            return Admitted(endpoint, await self.when_unavailable(endpoint, not_ready_reason(endpoint), waking_since))
        # At zero workers by the registry's account: a resolver that names a Service rather than ready replicas
        # (Kubernetes) would still answer with an address, so the registry decides.
        upstreams = [] if self._waker is not None and is_asleep(endpoint) else await self._resolver.upstreams(endpoint)
        if not upstreams:
            upstreams = await self.when_unavailable(endpoint, no_replica_reason(endpoint), waking_since)
        return Admitted(endpoint, upstreams)

    def _check_queueable(self, endpoint: ModelEndpoint, request: CompletionRequest) -> None:
        check_not_deleting(endpoint)
        check_fits(endpoint, request, self._zoo)
        if endpoint.status is EndpointStatus.UPDATE_FAILED:
            raise EndpointNotReadyError(not_ready_reason(endpoint))

    async def _lookup_for_caller(self, key: tuple[str, str]) -> ModelEndpoint:
        return await self._endpoints.get_for_inference(*key)

    async def _lookup_by_id(self, key: tuple[str, str]) -> ModelEndpoint:
        endpoint_id, endpoint_name = key
        endpoint = await self._endpoints.get_by_id(endpoint_id)
        if endpoint is None:
            raise EndpointNotFoundError(endpoint_name)
        return endpoint
