"""Watching replicas: notice when a replica's process exits, health-check it (``GET /health``) to move it between
STARTING, READY and UNHEALTHY, and read its load (in-flight requests, from ``GET /metrics``). Every change of phase
calls ``on_change`` (it wakes the supervisor)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx

from model_engine_server.orchestration.events import wait_event
from model_engine_server.orchestration.local.policy import SupervisionPolicy
from model_engine_server.orchestration.local.processes import process_alive
from model_engine_server.orchestration.local.replicas import Replica, ReplicaPhase
from model_engine_server.orchestration.local.scaling import in_flight_from_metrics

log = logging.getLogger(__name__)

_EXIT_POLL_SECONDS = 0.5  # adopted processes are not our children, so their exit is polled


class ReplicaWatcher:
    def __init__(self, http: httpx.AsyncClient, policy: SupervisionPolicy, on_change: Callable[[], None]) -> None:
        self._http = http
        self._policy = policy
        self._on_change = on_change

    def watch(self, r: Replica) -> None:
        r.tasks = [
            asyncio.create_task(self._wait_for_exit(r), name=f"exit-{r.pid}"),
            asyncio.create_task(self._probe_health(r), name=f"health-{r.pid}"),
            asyncio.create_task(self._probe_load(r), name=f"load-{r.pid}"),
        ]

    async def _wait_for_exit(self, r: Replica) -> None:
        if r.process is not None:
            r.exit_code = await r.process.wait()
        else:
            while process_alive(r.pid, r.start_time):
                await asyncio.sleep(_EXIT_POLL_SECONDS)
        if r.phase is not ReplicaPhase.STOPPING:
            log.warning("Replica pid %d (port %d) %s", r.pid, r.port, r.describe_exit())
        r.phase = ReplicaPhase.EXITED
        r.exited.set()
        self._on_change()

    async def _probe_health(self, r: Replica) -> None:
        policy = self._policy
        while not r.exited.is_set():
            try:
                healthy = (await self._http.get(f"{r.base_url}/health")).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if r.phase in (ReplicaPhase.STOPPING, ReplicaPhase.EXITED):
                return
            if r.phase is ReplicaPhase.DRAINING:  # leaving: its phase is no longer the health check's to change
                await wait_event(r.exited, policy.ready_health_interval_seconds)
                continue
            self._record_health(r, healthy)
            interval = {
                ReplicaPhase.READY: policy.ready_health_interval_seconds,
                ReplicaPhase.STARTING: policy.startup_probe_seconds,
            }.get(r.phase, policy.health_interval_seconds)
            await wait_event(r.exited, interval)

    async def _probe_load(self, r: Replica) -> None:
        """In-flight requests of a ready or draining replica, for autoscaling and drains."""
        while not r.exited.is_set():
            if r.phase in (ReplicaPhase.READY, ReplicaPhase.DRAINING):
                try:
                    response = await self._http.get(f"{r.base_url}/metrics")
                    r.in_flight = in_flight_from_metrics(response.text) if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError):  # not answering, or not a Prometheus exposition
                    r.in_flight = None
            await wait_event(r.exited, self._policy.load_interval_seconds)

    def _record_health(self, r: Replica, healthy: bool) -> None:
        now = time.monotonic()
        if healthy:
            r.health_failures = 0
            r.last_healthy_at = now
            if r.phase is not ReplicaPhase.READY:
                r.phase, r.ready_since = ReplicaPhase.READY, now
                log.info("Replica pid %d (port %d) is ready", r.pid, r.port)
                self._on_change()
            return
        if r.phase is ReplicaPhase.READY:
            r.health_failures += 1
            if r.health_failures >= self._policy.unhealthy_after_failures:
                r.phase, r.ready_since = ReplicaPhase.UNHEALTHY, None
                log.warning(
                    "Replica pid %d (port %d) failed %d health checks; no traffic until it recovers",
                    r.pid,
                    r.port,
                    r.health_failures,
                )
                self._on_change()
