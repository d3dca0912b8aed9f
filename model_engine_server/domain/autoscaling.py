"""Scaling rules every orchestrator follows (docs/autoscaling.md). Pure: the callers bring the clock and the load.

- **Scale to zero.** An endpoint with ``min_workers == 0`` sleeps (zero workers) once its latest demand — the last
  request any gateway reported (``ModelEndpoint.last_request_at``), or its creation or last update — is
  ``idle_seconds`` old (once READY). A request for a sleeping endpoint records demand at once, which wakes it.
- **Between min and max.** The replicas an endpoint's load calls for: in-flight requests over ``per_worker``, rounded
  up, within ``[max(min_workers, 1), max_workers]``. ``Stabiliser`` only follows a recommendation that held for a
  window (short to grow, long to shrink), like the Kubernetes HPA, so replicas do not flap.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint


@dataclass(frozen=True)
class ScalingPolicy:
    idle_seconds: float = 900.0  # LLM_ENGINE_SCALE_TO_ZERO_IDLE_SECONDS
    scale_up_window_seconds: float = 15.0  # LLM_ENGINE_AUTOSCALE_SCALE_UP_WINDOW_SECONDS
    scale_down_window_seconds: float = 300.0  # LLM_ENGINE_AUTOSCALE_SCALE_DOWN_WINDOW_SECONDS

    @property
    def demand_write_seconds(self) -> float:
        """How often a gateway writes an endpoint's demand while requests keep coming: rarely enough to cost the
        registry nothing per request, often enough that the idle clock is never more than a small fraction off."""
        return min(30.0, self.idle_seconds / 10)


def last_demand(endpoint: ModelEndpoint) -> datetime:
    """When the endpoint last had a reason to run: its latest request, creation or update."""
    last = endpoint.last_updated_at
    if endpoint.last_request_at is not None and endpoint.last_request_at > last:
        return endpoint.last_request_at
    return last


def should_sleep(endpoint: ModelEndpoint, now: datetime, idle_seconds: float) -> bool:
    """Zero workers for this endpoint now: ``min_workers == 0``, idle for ``idle_seconds``, and READY (an endpoint
    whose servers are still coming up for a new revision is not put to sleep before it ever served)."""
    if endpoint.config.min_workers > 0 or endpoint.status is not EndpointStatus.READY:
        return False
    return now - last_demand(endpoint) >= timedelta(seconds=idle_seconds)


def is_wakeable(endpoint: ModelEndpoint) -> bool:
    """A request finding no replica may wait for one: the endpoint is READY and may run at zero workers."""
    return endpoint.status is EndpointStatus.READY and endpoint.config.min_workers == 0


def is_asleep(endpoint: ModelEndpoint) -> bool:
    """The registry says the endpoint is at zero (READY with no available worker)."""
    return is_wakeable(endpoint) and endpoint.available_workers == 0


def replicas_for_load(in_flight: float, per_worker: int, min_workers: int, max_workers: int) -> int:
    """Replicas that keep in-flight requests per replica at or under ``per_worker``, within min and max."""
    low = max(min_workers, 1)
    wanted = math.ceil(in_flight / max(per_worker, 1))
    return min(max(wanted, low), max(low, max_workers))


class Stabiliser:
    """Follows a recommendation only once it held for the window: growing to the lowest count recommended over the
    scale-up window, shrinking to the highest over the scale-down window (the Kubernetes HPA's behaviour)."""

    def __init__(self, policy: ScalingPolicy) -> None:
        self._policy = policy
        self._history: deque[tuple[float, int]] = deque()

    def decide(self, current: int, recommended: int, now: float) -> int:
        self._history.append((now, recommended))
        horizon = max(self._policy.scale_up_window_seconds, self._policy.scale_down_window_seconds)
        # Keep one entry at least ``horizon`` old: it shows that the history covers the whole window.
        while len(self._history) > 1 and now - self._history[1][0] >= horizon:
            self._history.popleft()
        if recommended > current:
            held = self._held(now, self._policy.scale_up_window_seconds, grow=True)
            return current if held is None else max(current, held)
        if recommended < current:
            held = self._held(now, self._policy.scale_down_window_seconds, grow=False)
            return current if held is None else min(current, held)
        return current

    def _held(self, now: float, window: float, *, grow: bool) -> int | None:
        """What the whole window agrees on, or None while the history is shorter than the window."""
        if not self._history or now - self._history[0][0] < window:
            return None
        # The window's recommendations, and the one in force when the window began.
        older = [r for at, r in self._history if now - at > window]
        recent = [r for at, r in self._history if now - at <= window] + older[-1:]
        return min(recent) if grow else max(recent)
