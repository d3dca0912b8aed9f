"""Autoscaling on one machine: how many replicas a deployment wants, and how a replica leaves without dropping work.

- ``Scaling`` (one per deployment) turns the reconciler's sleep decision and the replicas' load — in-flight requests
  read from each ready replica's ``/metrics`` — into a replica count, through ``domain.autoscaling``.
- ``drain`` is how a replica chosen for removal goes: it is already out of every replica list (phase DRAINING), so
  it gets no new requests; it keeps the ones it has until they finish (up to the drain timeout); then it is stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from model_engine_server.domain.autoscaling import ScalingPolicy, Stabiliser, replicas_for_load
from model_engine_server.domain.entities import EndpointConfig
from model_engine_server.orchestration.events import wait_event

# Requests an engine is working on or has queued, as TGI (and the built-in server) and vLLM export them.
IN_FLIGHT_METRICS = frozenset(
    {"tgi_queue_size", "tgi_batch_current_size", "vllm:num_requests_running", "vllm:num_requests_waiting"}
)


def in_flight_from_metrics(text: str) -> int | None:
    """In-flight requests from a Prometheus exposition, or None when the engine exports none of the known gauges."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name in IN_FLIGHT_METRICS:
            total = (total or 0.0) + sum(sample.value for sample in family.samples)
    return None if total is None else round(total)


@dataclass
class Scaling:
    policy: ScalingPolicy
    min_workers: int = 1
    max_workers: int = 1
    per_worker: int = 10
    asleep: bool = False  # the reconciler's call: zero workers
    slept: bool = False  # it was at zero and has no ready replica since: "waking up"
    stabiliser: Stabiliser = field(init=False)

    def __post_init__(self) -> None:
        self.stabiliser = Stabiliser(self.policy)

    def configure(self, config: EndpointConfig) -> None:
        self.min_workers, self.max_workers, self.per_worker = config.min_workers, config.max_workers, config.per_worker

    def sleep(self, asleep: bool) -> None:
        self.slept = self.slept or asleep
        self.asleep = asleep

    def target(self, current: int, ready_loads: list[int | None], now: float) -> int:
        """The replicas wanted now, given the current count and the in-flight requests of each ready replica."""
        if self.asleep:
            return 0
        low = max(self.min_workers, 1)
        current = min(max(current, low), max(low, self.max_workers))
        known = [load for load in ready_loads if load is not None]
        if not known:
            return current
        recommended = replicas_for_load(sum(known), self.per_worker, self.min_workers, self.max_workers)
        return self.stabiliser.decide(current, recommended, now)

    def reason(self, desired: int, ready: int, draining: int) -> str | None:
        """Why the endpoint has the workers it has, for its ``status_reason`` (None when there is nothing to say)."""
        if self.asleep and ready == 0:
            return f"Idle at zero workers (no request for {self.policy.idle_seconds:.0f}s); the next request wakes it"
        if self.slept and ready == 0:
            return "Waking up from zero workers: starting a replica for waiting requests"
        if desired > ready:
            return f"Scaling up under load: {ready} of {desired} replicas ready"
        if draining:
            return f"Scaling down: {draining} replica(s) finishing their in-flight requests before stopping"
        return None


async def drain(
    in_flight: Callable[[], int | None],
    exited: asyncio.Event,
    *,
    settle_seconds: float,
    timeout_seconds: float,
    poll_seconds: float,
) -> None:
    """Return once a replica that left the replica lists has no request left (or exited, or the timeout passed).
    The settle time lets requests routed just before it left arrive; an engine without load metrics gets only that,
    and SIGTERM's own grace afterwards."""
    deadline = time.monotonic() + timeout_seconds
    await wait_event(exited, settle_seconds)
    while not exited.is_set() and time.monotonic() < deadline:
        load = in_flight()
        if not load:  # 0, or unknown
            return
        await wait_event(exited, poll_seconds)
