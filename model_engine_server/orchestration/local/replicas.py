"""The local orchestrator's in-memory picture: each endpoint's deployment, its replicas and their phases.

A replica's life: STARTING → READY ⇄ UNHEALTHY → STOPPING → EXITED; a ready replica removed by scaling down is
DRAINING before STOPPING. A deployment holds the wanted generation of
replicas by slot, the ready replicas of older generations still serving during a rollover, and those being stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from model_engine_server.domain.autoscaling import ScalingPolicy
from model_engine_server.orchestration.local.launch import LaunchSpec
from model_engine_server.orchestration.local.scaling import Scaling
from model_engine_server.orchestration.local.state import DeploymentRecord, ReplicaRecord


class ReplicaPhase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"  # being removed: no new requests, finishing the ones it has
    STOPPING = "stopping"
    EXITED = "exited"


@dataclass(eq=False)
class Replica:
    slot: int
    launch_key: str
    port: int
    pid: int
    start_time: int | None
    log_path: Path
    log_offset: int  # where this run's output starts in the (appended) log file
    process: asyncio.subprocess.Process | None  # None when adopted from an earlier platform run
    started_at: float = field(default_factory=time.monotonic)
    phase: ReplicaPhase = ReplicaPhase.STARTING
    ready_since: float | None = None
    last_healthy_at: float | None = None
    health_failures: int = 0
    in_flight: int | None = None  # requests it is working on, from its /metrics (None: not known yet)
    exit_code: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stop_task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe_exit(self) -> str:
        if self.exit_code is None:
            return "exited"
        if self.exit_code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-self.exit_code).name}"
        return f"exited with code {self.exit_code}"


@dataclass
class SlotHealth:
    """Crash history of one replica slot; survives the replica processes that fill the slot."""

    crashes: int = 0
    restart_at: float = 0.0
    last_reason: str | None = None


@dataclass(eq=False)
class Deployment:
    endpoint_id: str
    name: str
    revision: int
    launch_key: str
    desired: int
    launch: LaunchSpec | None  # None for a deployment re-adopted from the state file and not applied yet
    current: dict[int, Replica] = field(default_factory=dict)  # slot -> replica of the wanted generation
    previous: list[Replica] = field(default_factory=list)  # ready replicas of older generations, still serving
    retiring: list[Replica] = field(default_factory=list)  # being stopped in the background
    slots: dict[int, SlotHealth] = field(default_factory=dict)
    deleting: bool = False
    scaling: Scaling = field(default_factory=lambda: Scaling(ScalingPolicy()))

    def replicas(self) -> list[Replica]:
        return [*self.current.values(), *self.previous, *self.retiring]

    def reclaim_draining(self, slot: int) -> Replica | None:
        """A replica of the current generation that is still draining, put back to work in ``slot`` (load came back,
        or a request arrived just as it went idle). Draining means its stop task still waits inside ``drain``, so
        cancelling it stops nothing."""
        r = next(
            (r for r in self.retiring if r.phase is ReplicaPhase.DRAINING and r.launch_key == self.launch_key), None
        )
        if r is None:
            return None
        if r.stop_task is not None:
            r.stop_task.cancel()
            r.stop_task = None
        self.retiring.remove(r)
        r.slot, r.phase = slot, ReplicaPhase.READY
        self.current[slot] = r
        return r


@dataclass(frozen=True)
class ReplicaView:
    """A read-only look at one replica, for the CLI and tests."""

    slot: int
    pid: int
    port: int
    phase: ReplicaPhase
    log_path: Path
    current: bool


def deployment_record(d: Deployment) -> DeploymentRecord:
    """What the state file keeps of a deployment: its live replicas, current generation first."""
    replicas = [
        ReplicaRecord(
            r.slot,
            r.pid,
            r.port,
            r.start_time,
            r.launch_key,
            str(r.log_path),
            r.log_offset,
            r.phase is ReplicaPhase.READY,
        )
        for r in [*d.current.values(), *d.previous]
        if not r.exited.is_set()
    ]
    return DeploymentRecord(d.endpoint_id, d.name, d.revision, d.launch_key, d.desired, replicas)


def adopted_deployment(record: DeploymentRecord, alive: Callable[[int, int | None], bool]) -> Deployment:
    """A deployment re-adopted from the state file after a platform restart: only replicas whose process still
    runs; its launch spec is unknown until the reconciler applies the endpoint again."""
    d = Deployment(
        record.endpoint_id, record.name, record.revision, record.launch_key, record.desired_replicas, launch=None
    )
    for rr in record.replicas:
        if not alive(rr.pid, rr.start_time):
            continue
        r = Replica(rr.slot, rr.launch_key, rr.port, rr.pid, rr.start_time, Path(rr.log_path), rr.log_offset, None)
        if rr.launch_key == record.launch_key and rr.slot not in d.current:
            d.current[rr.slot] = r
        else:
            d.previous.append(r)
    return d
