"""The local orchestrator: each endpoint is served by inference-server processes on this machine's loopback.

One supervisor task owns the process lifecycle of every endpoint (start, restart with backoff, roll over, scale);
each replica has a watcher task that health-checks it and notices when it exits. ``apply``/``delete`` change what is
wanted and wake the supervisor; ``observe``/``upstreams`` read in-process state and never block on I/O. Other
processes (the async worker, a gateway run alone) find the replicas through ``LocalReplicaDirectory``.

A replica's life: STARTING → READY ⇄ UNHEALTHY → STOPPING → EXITED. An exit that we did not ask for is a crash: the
slot is restarted after a growing delay, and ``crash_loop_after`` crashes in a row turn the endpoint UPDATE_FAILED with
the last lines the process printed. A new revision whose launch command differs starts a new generation of replicas
while the old ones keep serving, and stops the old ones once every new replica is ready.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.orchestration import events
from model_engine_server.orchestration.events import wait_event
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.launch import LaunchSpec, build_launch_spec
from model_engine_server.orchestration.local.policy import SupervisionPolicy
from model_engine_server.orchestration.local.processes import (
    LAUNCHED_BY,
    free_port,
    launched_by,
    log_tail,
    process_alive,
    process_start_time,
    signal_group,
)
from model_engine_server.orchestration.local.replicas import (
    Deployment,
    Replica,
    ReplicaPhase,
    ReplicaView,
    SlotHealth,
    adopted_deployment,
    deployment_record,
)
from model_engine_server.orchestration.local.scaling import Scaling, drain
from model_engine_server.orchestration.local.state import StateFile
from model_engine_server.orchestration.local.supervisor import ProcessStartError, start_process, stop_process_group
from model_engine_server.orchestration.local.watcher import ReplicaWatcher

log = logging.getLogger(__name__)


class LocalOrchestrator:
    """Implements ``domain.ports.Orchestrator`` with processes on this machine, and ``UpstreamResolver`` for the
    process it runs in (``start()`` first: an orchestrator that was not started runs nothing and routes nowhere)."""

    def __init__(
        self, settings: Settings, policy: SupervisionPolicy | None = None, zoo: ModelZoo | None = None
    ) -> None:
        self._settings = settings
        self._policy = policy or SupervisionPolicy()
        self._zoo = zoo or settings.model_zoo()
        self._state = StateFile(state_file_path(settings.data_dir))
        self._deployments: dict[str, Deployment] = {}
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()  # wakes the supervisor
        self._changed = asyncio.Event()  # wakes ``wait_for_change``
        self._supervisor: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._watcher: ReplicaWatcher | None = None
        self._scaling_policy = settings.scaling_policy()

    # --- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._policy.health_timeout_seconds, trust_env=False)
        self._watcher = ReplicaWatcher(self._http, self._policy, self._notify)
        self._adopt_from_state()
        self._stop_orphans()
        self._save_state()
        self._supervisor = asyncio.create_task(self._supervise(), name="local-orchestrator-supervisor")

    async def close(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the grace) and forget them."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait({self._supervisor})  # unlike `await`, never swallows a cancellation of close()
            self._supervisor = None
        replicas = [r for d in self._deployments.values() for r in d.replicas()]
        await asyncio.gather(*(self._stop(r) for r in replicas))
        self._deployments.clear()
        self._state.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- the Orchestrator port -----------------------------------------------------------------------------------

    async def apply(self, endpoint: ModelEndpoint) -> None:
        spec = build_launch_spec(self._settings, endpoint, self._zoo)
        desired = max(endpoint.config.min_workers, 1)
        async with self._lock:
            d = self._deployments.get(endpoint.id)
            if d is None or d.deleting:
                d = Deployment(endpoint.id, endpoint.name, endpoint.revision, spec.key, desired, spec)
                d.scaling = Scaling(self._scaling_policy)
                self._deployments[endpoint.id] = d
            elif d.launch_key != spec.key:
                self._begin_rollover(d)
            d.scaling.configure(endpoint.config)
            d.name, d.revision = endpoint.name, endpoint.revision
            d.desired = d.scaling.target(d.desired, [], time.monotonic())  # the load decides from here on
            d.launch_key, d.launch = spec.key, spec
            await self._converge(d)
            self._save_state()
        self._notify()

    async def delete(self, endpoint: ModelEndpoint) -> None:
        async with self._lock:
            d = self._deployments.get(endpoint.id)
            if d is None:
                return
            d.deleting = True
            replicas = d.replicas()
            d.current, d.previous, d.retiring = {}, [], replicas
        await asyncio.gather(*(self._stop(r) for r in replicas))
        async with self._lock:
            if self._deployments.get(endpoint.id) is d:
                del self._deployments[endpoint.id]
            self._save_state()
        self._notify()

    async def set_asleep(self, endpoint: ModelEndpoint, asleep: bool) -> None:
        d = self._deployments.get(endpoint.id)
        if d is not None and not d.deleting and d.scaling.asleep != asleep:
            log.info("Endpoint %s: %s", d.name, "idle, scaling to zero" if asleep else "woken up by a request")
            d.scaling.sleep(asleep)
            self._notify()

    async def observe(self, endpoint: ModelEndpoint) -> ObservedState:
        d = self._deployments.get(endpoint.id)
        if d is None or d.deleting:
            return ObservedState(
                EndpointStatus.UPDATE_IN_PROGRESS, reason="No servers run for this endpoint yet", missing=True
            )
        ready_slots = {slot for slot, r in d.current.items() if r.phase is ReplicaPhase.READY}
        available = len(ready_slots) + sum(r.phase is ReplicaPhase.READY for r in d.previous)
        unavailable = max(d.desired - len(ready_slots), 0)
        troubled = [(slot, h) for slot, h in sorted(d.slots.items()) if h.crashes and slot not in ready_slots]
        looping = [h for _, h in troubled if h.crashes >= self._policy.crash_loop_after]
        draining = sum(r.phase is ReplicaPhase.DRAINING for r in d.retiring)
        scaling_reason = d.scaling.reason(d.desired, len(ready_slots), draining)
        if (ready_slots or d.scaling.asleep or d.scaling.slept) and not d.previous and not looping:
            return ObservedState(EndpointStatus.READY, available, unavailable, scaling_reason)
        if ready_slots and not d.previous:
            return ObservedState(EndpointStatus.READY, available, unavailable, looping[0].last_reason)
        if looping:
            return ObservedState(EndpointStatus.UPDATE_FAILED, available, unavailable, looping[0].last_reason)
        unhealthy = [r for r in d.current.values() if r.phase is ReplicaPhase.UNHEALTHY]
        if troubled:
            reason = troubled[0][1].last_reason
        elif unhealthy:
            reason = f"Replica {unhealthy[0].slot} stopped answering health checks (log: {unhealthy[0].log_path})"
        else:
            reason = f"Starting {unavailable} of {d.desired} replica(s); output in {self._log_dir(d.name)}"
        return ObservedState(EndpointStatus.UPDATE_IN_PROGRESS, available, unavailable, reason)

    # --- the UpstreamResolver port, for the process it runs in --------------------------------------------------------

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        """Ready replicas, current generation first (other processes read the same from the state file)."""
        d = self._deployments.get(endpoint.id)
        if d is None or d.deleting:
            return []
        return [r.base_url for r in [*d.current.values(), *d.previous] if r.phase is ReplicaPhase.READY]

    async def wait_for_change(self, timeout: float) -> None:
        await events.wait_for_change(self._changed, timeout)

    # --- read-only views -------------------------------------------------------------------------------------------

    def replicas(self, endpoint_id: str) -> list[ReplicaView]:
        d = self._deployments.get(endpoint_id)
        if d is None:
            return []
        views = [ReplicaView(r.slot, r.pid, r.port, r.phase, r.log_path, True) for r in d.current.values()]
        return views + [ReplicaView(r.slot, r.pid, r.port, r.phase, r.log_path, False) for r in d.previous]

    # --- supervision ---------------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._kick.set()

    async def _supervise(self) -> None:
        while True:
            try:
                async with self._lock:
                    for d in list(self._deployments.values()):
                        await self._converge(d)
                    self._save_state()
            except Exception:  # one bad tick must not end supervision of every endpoint
                log.exception("Local orchestrator supervision failed; retrying")
            await wait_event(self._kick, self._policy.health_interval_seconds)
            self._kick.clear()

    async def _converge(self, d: Deployment) -> None:
        """Move one deployment a step towards what is wanted. Called with the lock held."""
        if d.deleting:
            return
        now = time.monotonic()
        d.retiring = [r for r in d.retiring if not r.exited.is_set()]
        d.previous = [r for r in d.previous if r.phase is not ReplicaPhase.EXITED]
        for slot, r in list(d.current.items()):
            self._check_replica(d, slot, r, now)
        if not d.previous:  # during a rollover the count stays as it is
            loads = [r.in_flight for r in d.current.values() if r.phase is ReplicaPhase.READY]
            d.desired = d.scaling.target(d.desired, loads, now)
        if d.desired and d.current and all(r.phase is ReplicaPhase.READY for r in d.current.values()):
            d.scaling.slept = False  # awake again
        for slot in [s for s in d.current if s >= d.desired]:
            self._drain(d, d.current.pop(slot))
        for slot in [s for s in d.slots if s >= d.desired]:
            del d.slots[slot]
        if d.launch is not None:
            for slot in range(d.desired):
                if slot in d.current or now < d.slots.get(slot, SlotHealth()).restart_at:
                    continue
                reclaimed = d.reclaim_draining(slot)  # wanted again while it drains: back to work, no new process
                if reclaimed is not None:
                    log.info("Endpoint %s: replica pid %d is wanted again; it stops draining", d.name, reclaimed.pid)
                else:
                    await self._spawn(d, d.launch, slot)
        rolled_over = all(s in d.current and d.current[s].phase is ReplicaPhase.READY for s in range(d.desired))
        if d.previous and rolled_over:
            log.info(
                "Endpoint %s: revision %d is ready; stopping %d old replica(s)", d.name, d.revision, len(d.previous)
            )
            for r in d.previous:
                self._retire(d, r)
            d.previous = []

    def _check_replica(self, d: Deployment, slot: int, r: Replica, now: float) -> None:
        policy = self._policy
        if r.phase is ReplicaPhase.EXITED:
            del d.current[slot]
            self._record_crash(d, r, r.describe_exit(), now)
        elif r.phase is ReplicaPhase.STARTING and now - r.started_at > policy.startup_timeout_seconds:
            del d.current[slot]
            self._retire(d, r)
            self._record_crash(d, r, f"did not become healthy within {policy.startup_timeout_seconds:.0f}s", now)
        elif r.phase is ReplicaPhase.UNHEALTHY and now - (r.last_healthy_at or now) > policy.hung_restart_after_seconds:
            del d.current[slot]
            self._retire(d, r)
            self._record_crash(
                d, r, f"stopped answering health checks for {policy.hung_restart_after_seconds:.0f}s", now
            )
        elif r.phase is ReplicaPhase.READY and r.ready_since is not None:
            if now - r.ready_since >= policy.stable_after_seconds and slot in d.slots:
                del d.slots[slot]  # it stayed up: earlier crashes no longer count towards a crash loop

    def _record_crash(self, d: Deployment, r: Replica, what: str, now: float) -> None:
        policy = self._policy
        health = d.slots.setdefault(r.slot, SlotHealth())
        health.crashes += 1
        delay = min(
            policy.restart_backoff_initial_seconds * 2 ** (health.crashes - 1), policy.restart_backoff_max_seconds
        )
        health.restart_at = now + delay
        output = log_tail(r.log_path, r.log_offset, policy.crash_reason_lines, policy.crash_reason_max_chars)
        detail = f": {output}" if output else ""
        if health.crashes >= policy.crash_loop_after:
            health.last_reason = (
                f"Replica {r.slot} keeps crashing ({health.crashes} times in a row, last one "
                f"{what}){detail} (log: {r.log_path})"
            )
        else:
            health.last_reason = f"Replica {r.slot} {what}; restarting in {delay:.1f}s{detail} (log: {r.log_path})"
        log.warning("Endpoint %s: %s", d.name, health.last_reason)

    def _begin_rollover(self, d: Deployment) -> None:
        """Keep the old generation's ready replicas serving; the rest of it goes now."""
        for r in d.current.values():
            if r.phase is ReplicaPhase.READY:
                d.previous.append(r)
            else:
                self._retire(d, r)
        d.current, d.slots = {}, {}

    def _retire(self, d: Deployment, r: Replica) -> None:
        d.retiring.append(r)
        r.stop_task = r.stop_task or asyncio.create_task(self._terminate(r), name=f"stop-{r.pid}")

    def _drain(self, d: Deployment, r: Replica) -> None:
        """Scale down without dropping work: out of the replica lists now, stopped once its requests finished."""
        if r.phase is not ReplicaPhase.READY:
            self._retire(d, r)
            return
        log.info("Endpoint %s: draining replica %d (pid %d) before stopping it", d.name, r.slot, r.pid)
        r.phase = ReplicaPhase.DRAINING
        d.retiring.append(r)
        r.stop_task = asyncio.create_task(self._drain_then_stop(r), name=f"drain-{r.pid}")

    async def _drain_then_stop(self, r: Replica) -> None:
        policy = self._policy
        await drain(
            lambda: r.in_flight,
            r.exited,
            settle_seconds=policy.drain_settle_seconds,
            timeout_seconds=self._settings.autoscale_drain_timeout_seconds,
            poll_seconds=policy.load_interval_seconds,
        )
        await self._terminate(r)

    async def _stop(self, r: Replica) -> None:
        if r.phase is ReplicaPhase.DRAINING and r.stop_task is not None:
            r.stop_task.cancel()  # shutting down or deleting: no more waiting for its requests
            r.stop_task = None
        r.stop_task = r.stop_task or asyncio.create_task(self._terminate(r), name=f"stop-{r.pid}")
        await asyncio.shield(r.stop_task)

    async def _terminate(self, r: Replica) -> None:
        if not r.exited.is_set():
            r.phase = ReplicaPhase.STOPPING
        await stop_process_group(r.pid, r.exited.wait, self._policy.stop_grace_seconds, "Replica")
        for task in r.tasks:
            task.cancel()

    # --- replica processes -----------------------------------------------------------------------------------------

    def _log_dir(self, name: str) -> Path:
        return self._settings.data_dir / "logs" / "endpoints" / name

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LLM_ENGINE_DATA_DIR"] = str(self._settings.data_dir)
        env["LLM_ENGINE_MODEL_CACHE_DIR"] = str(self._settings.models_dir)
        env["PYTHONUNBUFFERED"] = "1"  # crash output must reach the log before the process dies
        env[LAUNCHED_BY] = str(self._state.path)
        return env

    async def _spawn(self, d: Deployment, launch: LaunchSpec, slot: int) -> None:
        port = free_port()
        argv = launch.argv(port)
        log_path = self._log_dir(d.name) / f"replica-{slot}.log"
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        banner = f"===== {stamp} replica {slot} of {d.name} (revision {d.revision}), port {port}: {shlex.join(argv)}"
        try:
            process, offset = await start_process(argv, log_path, env=self._child_env(), banner=banner)
        except ProcessStartError as exc:
            failed = Replica(slot, launch.key, port, -1, None, log_path, exc.log_offset, None)
            self._record_crash(d, failed, f"could not be started ({exc.reason})", time.monotonic())
            return
        r = Replica(slot, launch.key, port, process.pid, process_start_time(process.pid), log_path, offset, process)
        log.info("Endpoint %s: started replica %d (pid %d, port %d); output in %s", d.name, slot, r.pid, port, log_path)
        d.current[slot] = r
        # Recorded before anything else can happen: a crash of this process from here on leaves a server that the
        # next start adopts rather than one it cannot see and starts again.
        self._save_state()
        self._watch(r)

    # --- state across platform restarts ------------------------------------------------------------------------------

    def _watch(self, r: Replica) -> None:
        assert self._watcher is not None, "start() creates the watcher"
        self._watcher.watch(r)

    def _adopt_from_state(self) -> None:
        for record in self._state.load():
            d = adopted_deployment(record, process_alive)
            d.scaling = Scaling(self._scaling_policy)
            for r in [*d.current.values(), *d.previous]:
                self._watch(r)
                log.info("Endpoint %s: re-adopted replica %d (pid %d, port %d)", d.name, r.slot, r.pid, r.port)
            if d.current or d.previous:
                self._deployments[d.endpoint_id] = d

    def _stop_orphans(self) -> None:
        """Replicas a previous run of this orchestrator started but was killed before recording: nothing routes to
        them, and the state would start their slots again — stop them instead of running them twice."""
        adopted = {r.pid for d in self._deployments.values() for r in d.replicas()}
        for pid in launched_by(self._state.path) - adopted:
            log.warning("Stopping replica pid %d: started by an earlier run that did not record it", pid)
            signal_group(pid, signal.SIGKILL)

    def _save_state(self) -> None:
        self._state.save([deployment_record(d) for d in self._deployments.values() if not d.deleting])
