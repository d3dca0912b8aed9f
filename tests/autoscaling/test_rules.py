"""The scaling rules on their own: replicas for a load, the stabilisation window, reading an engine's load, and
putting a draining replica back to work."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from model_engine_server.domain.autoscaling import ScalingPolicy, Stabiliser, replicas_for_load
from model_engine_server.orchestration.local.replicas import Deployment, Replica, ReplicaPhase
from model_engine_server.orchestration.local.scaling import in_flight_from_metrics


def test_load_recommends_replicas_within_min_and_max() -> None:
    assert replicas_for_load(0, per_worker=4, min_workers=0, max_workers=3) == 1
    assert replicas_for_load(9, per_worker=4, min_workers=1, max_workers=3) == 3
    assert replicas_for_load(100, per_worker=4, min_workers=1, max_workers=3) == 3
    assert replicas_for_load(1, per_worker=4, min_workers=2, max_workers=3) == 2


def test_the_stabiliser_follows_only_a_recommendation_that_held_for_its_window() -> None:
    stabiliser = Stabiliser(ScalingPolicy(scale_up_window_seconds=10, scale_down_window_seconds=30))
    assert stabiliser.decide(1, 3, now=0) == 1  # a spike: not yet
    assert stabiliser.decide(1, 3, now=5) == 1
    assert stabiliser.decide(1, 2, now=10) == 2  # the lowest of the last 10 s
    assert stabiliser.decide(2, 1, now=20) == 2  # less load: only after 30 s of it
    assert stabiliser.decide(2, 1, now=45) == 2  # 2 was still recommended 35 s ago, within the window...
    assert stabiliser.decide(2, 1, now=51) == 1  # ...and no longer


def test_in_flight_requests_are_read_from_tgi_and_vllm_metrics() -> None:
    tgi = (
        "# TYPE tgi_queue_size gauge\ntgi_queue_size 3\n# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 5\n"
    )
    vllm = 'vllm:num_requests_running{model_name="m"} 2.0\nvllm:num_requests_waiting{model_name="m"} 1.0\n'
    assert in_flight_from_metrics(tgi) == 8
    assert in_flight_from_metrics(vllm) == 3
    assert in_flight_from_metrics("process_cpu_seconds_total 1.5\n") is None  # an engine without load gauges


async def test_a_draining_replica_wanted_again_goes_back_to_work_without_being_stopped(tmp_path: Path) -> None:
    deployment = Deployment("e1", "ep", 1, "key", 1, launch=None)
    replica = Replica(0, "key", 1234, 99999, None, tmp_path / "r.log", 0, None, phase=ReplicaPhase.DRAINING)
    draining = asyncio.create_task(asyncio.Event().wait())  # its stop task, still waiting inside drain()
    replica.stop_task = draining
    deployment.retiring.append(replica)

    assert deployment.reclaim_draining(0) is replica
    assert deployment.current == {0: replica} and replica.phase is ReplicaPhase.READY and not deployment.retiring
    with contextlib.suppress(asyncio.CancelledError):
        await draining
    assert draining.cancelled() and replica.stop_task is None
    assert deployment.reclaim_draining(0) is None  # nothing else is draining
