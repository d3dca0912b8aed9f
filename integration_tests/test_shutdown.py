"""Ctrl-C stops everything ``model-engine serve`` started: no inference server or worker outlives it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from integration_tests.support import Platform, stop_platform
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.processes import process_alive, process_start_time
from model_engine_server.orchestration.local.state import StateFile
from model_engine_server.testing import eventually

pytestmark = [pytest.mark.timeout(400), pytest.mark.stops_platform]


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (inference servers run in sessions of their own, but are still its children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def ready_replica_pids(data_dir: Path) -> set[int]:
    return {r.pid for d in StateFile(state_file_path(data_dir)).load() for r in d.replicas if r.ready}


def test_ctrl_c_stops_the_gateway_the_worker_and_every_inference_server(platform: Platform) -> None:
    if platform.process is None or platform.data_dir is None:
        pytest.skip("only a platform these tests started can be stopped by them")
    data_dir = platform.data_dir
    replicas = eventually(  # the demo endpoint's server, at least
        lambda: ready_replica_pids(data_dir),
        timeout=240,
        interval=0.5,
        what=lambda: f"an inference server to become ready{platform.describe()}",
    )
    tree = {(pid, process_start_time(pid)) for pid in descendants(platform.process.pid)}
    assert replicas <= {pid for pid, _ in tree}
    assert len(tree) > len(replicas)  # the async worker runs too

    started = time.monotonic()
    exit_code = stop_platform(platform)
    stopped_after = time.monotonic() - started

    assert exit_code == 0, f"exit code {exit_code} after {stopped_after:.1f}s{platform.describe()}"
    survivors = [pid for pid, start in tree if process_alive(pid, start)]
    assert survivors == [], f"still running after Ctrl-C: {survivors}"
    assert "Stopped." in platform.describe()
