"""Wake on demand: the gateways' side of scale to zero and back (docs/autoscaling.md).

Every admitted request reports demand for its endpoint in the registry (``record_demand``, written at most every
``demand_write_seconds`` per endpoint and process). A request for an endpoint at zero writes it at once — that is
what wakes the endpoint: the reconciler, on any machine, sees recent demand and starts a replica — and then waits
(``hold``) until the registry reports an available worker and the resolver a ready replica, up to
``cold_start_timeout_seconds``; past that it gets a 503 with ``Retry-After``. A queued task does not wait (``poke``):
it wakes the endpoint the same way and comes back later, so a cold start holds no worker thread. Requests arriving
together share one wait, so they wake the endpoint once. Nothing is kept in memory that a restarted gateway would
need: the demand is in the registry, so an endpoint is never left asleep with requests waiting, nor awake without any.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from model_engine_server.domain.autoscaling import ScalingPolicy
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import (
    EndpointNotFoundError,
    EndpointNotReadyError,
    EndpointWakeTimeoutError,
    EndpointWakingError,
)
from model_engine_server.domain.ports import InferenceEndpoints, UpstreamResolver
from model_engine_server.domain.rules import check_not_deleting, status_reason_suffix

log = logging.getLogger(__name__)

COLD_STARTS = Counter(
    "llm_engine_endpoint_cold_starts", "Wake-ups of endpoints at zero workers caused by requests.", ["endpoint_id"]
)
HELD = Gauge(
    "llm_engine_endpoint_held_requests",
    "Requests waiting for an endpoint at zero workers to get a ready replica (its queue), per endpoint.",
    ["endpoint_id"],
)
HOLD_SECONDS = Histogram(
    "llm_engine_endpoint_hold_seconds",
    "How long requests waited for a waking endpoint, by outcome (served, timeout, failed).",
    ["outcome"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)

RETRY_AFTER_SECONDS = 30.0
POLL_SECONDS = 0.2  # how often a waiting request re-reads the registry and the replicas


class Waker:
    def __init__(
        self,
        endpoints: InferenceEndpoints,
        resolver: UpstreamResolver,
        *,
        timeout_seconds: float,
        demand_write_seconds: float,
        poll_seconds: float = POLL_SECONDS,
        on_wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_wake = on_wake  # an in-process reconciler acts on the demand at once (``model-engine serve``)
        self._endpoints = endpoints
        self._resolver = resolver
        self._timeout = timeout_seconds
        self._write_every = demand_write_seconds
        self._poll = poll_seconds
        self._written: dict[str, float] = {}  # endpoint id -> monotonic time of this process's last demand write
        self._waits: dict[str, asyncio.Task[list[str]]] = {}
        self._writes: set[asyncio.Task[None]] = set()

    @classmethod
    def of(
        cls,
        endpoints: InferenceEndpoints,
        resolver: UpstreamResolver,
        policy: ScalingPolicy,
        timeout: float,
        on_wake: Callable[[], None] = lambda: None,
    ) -> Waker:
        write_every = policy.demand_write_seconds
        return cls(endpoints, resolver, timeout_seconds=timeout, demand_write_seconds=write_every, on_wake=on_wake)

    async def note(self, endpoint: ModelEndpoint) -> None:
        """A request was admitted: report demand unless this process did so recently — in the background, so a slow
        or unreachable registry never delays the request."""
        last = self._written.get(endpoint.id)
        if last is None or time.monotonic() - last >= self._write_every:
            self._written[endpoint.id] = time.monotonic()
            write = asyncio.create_task(self.wake(endpoint), name=f"demand-{endpoint.name}")
            self._writes.add(write)  # a reference until it is done (the loop keeps only weak ones)
            write.add_done_callback(self._writes.discard)

    async def wake(self, endpoint: ModelEndpoint) -> None:
        """Report demand now. Never fails the request: a registry hiccup only delays the demand to the next one."""
        self._written[endpoint.id] = time.monotonic()
        try:
            await self._endpoints.record_demand(endpoint.id, datetime.now(UTC))
        except Exception as exc:  # the registry is briefly unreachable
            log.warning("Could not record demand for endpoint %s (%s)", endpoint.name, type(exc).__name__)
            self._written.pop(endpoint.id, None)

    async def hold(self, endpoint: ModelEndpoint) -> list[str]:
        """Wake ``endpoint`` and wait for its ready replicas; ``EndpointNotReadyError`` (503) past the bound."""
        started = time.monotonic()
        waiting = self._waiting(endpoint)
        held = HELD.labels(endpoint.id)
        held.inc()
        outcome = "failed"
        try:
            upstreams = await asyncio.shield(waiting)  # one caller going away must not end the others' wait
            outcome = "served"
            return upstreams
        except EndpointWakeTimeoutError:
            outcome = "timeout"
            raise
        finally:
            held.dec()
            HOLD_SECONDS.labels(outcome).observe(time.monotonic() - started)

    async def poke(self, endpoint: ModelEndpoint, since: float) -> list[str]:
        """``hold`` without the wait, for a caller that comes back later (a queued task): wake ``endpoint`` and
        return its ready replicas if it has some now, else ``EndpointWakingError``; once the cold-start bound has
        passed since ``since`` (wall-clock seconds: when the caller first found it at zero), the 503 ``hold`` gives."""
        upstreams = await self._ready_upstreams(endpoint)
        if upstreams:
            return upstreams
        if time.time() - since >= self._timeout:
            raise self._timeout_error(endpoint)
        self._waiting(endpoint)  # the shared wait wakes it once and keeps its demand fresh while it starts
        raise EndpointWakingError(f"Model endpoint {endpoint.name!r} is waking up from zero workers.")

    def _waiting(self, endpoint: ModelEndpoint) -> asyncio.Task[list[str]]:
        """The endpoint's one wait for a ready replica, started by the first caller."""
        waiting = self._waits.get(endpoint.id)
        if waiting is None:
            waiting = asyncio.create_task(self._wait_ready(endpoint), name=f"wake-{endpoint.name}")
            self._waits[endpoint.id] = waiting
            waiting.add_done_callback(lambda task: self._forget(endpoint.id, task))
        return waiting

    def _timeout_error(self, endpoint: ModelEndpoint) -> EndpointWakeTimeoutError:
        return EndpointWakeTimeoutError(
            f"Model endpoint {endpoint.name!r} is waking up from zero workers and had no ready replica within "
            f"{self._timeout:.0f}s; try again shortly.",
            retry_after=RETRY_AFTER_SECONDS,
        )

    def _forget(self, endpoint_id: str, task: asyncio.Task[list[str]]) -> None:
        self._waits.pop(endpoint_id, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away before it ended

    async def _wait_ready(self, endpoint: ModelEndpoint) -> list[str]:
        COLD_STARTS.labels(endpoint.id).inc()
        log.info("Endpoint %s is at zero workers: waking it for a waiting request", endpoint.name)
        try:
            async with asyncio.timeout(self._timeout):
                await self.wake(endpoint)
                self._on_wake()
                while True:
                    await self.note(endpoint)  # keeps the demand fresh while the replica starts
                    upstreams = await self._ready_upstreams(endpoint)
                    if upstreams:
                        return upstreams
                    await asyncio.sleep(self._poll)
        except TimeoutError:
            raise self._timeout_error(endpoint) from None

    async def _ready_upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        try:
            record = await self._endpoints.get_by_id(endpoint.id)
        except Exception as exc:  # the registry is briefly unreachable: keep waiting, within the bound
            log.warning("Could not read endpoint %s while it wakes (%s)", endpoint.name, type(exc).__name__)
            return []
        if record is None:
            raise EndpointNotFoundError(endpoint.name)
        check_not_deleting(record)
        if record.status is EndpointStatus.UPDATE_FAILED:
            raise EndpointNotReadyError(
                f"Model endpoint {endpoint.name!r} failed while waking up{status_reason_suffix(record)}."
            )
        if record.available_workers == 0:
            return []
        return await self._resolver.upstreams(record)
