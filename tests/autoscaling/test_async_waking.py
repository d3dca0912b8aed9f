"""Async tasks for an endpoint at zero wake it and come back later: they never hold the worker's threads while it
starts, so other endpoints' tasks keep running, and they are never failed for being early."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.autoscaling.conftest import LocalPlatform
from tests.processes import poll_until

pytestmark = pytest.mark.slow

BODY = {"prompt": "hello there", "max_new_tokens": 5, "temperature": 0}
WAKING_TASKS = 4  # twice the worker's threads (conftest)


def _submit(client: httpx.Client, name: str) -> str:
    submitted = client.post("/v1/llm/completions-async", params={"model_endpoint_name": name}, json=BODY)
    assert submitted.status_code == 200, submitted.text
    return str(submitted.json()["task_id"])


def _status(client: httpx.Client, task: str) -> str:
    return str(client.get(f"/v1/async-tasks/{task}").json()["status"])


def test_tasks_for_a_waking_endpoint_leave_the_worker_to_other_endpoints_and_all_succeed(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    control = tmp_path / "late-riser.json"  # the stand-in server reads it at each start
    control.write_text("{}")
    platform.create("late-riser", checkpoint_path=str(control))
    platform.create("early-bird", min_workers=1)
    poll_until(lambda: platform.workers("early-bird")[:2] == ("READY", 1), 30, "early-bird ready")
    platform.wait_asleep("late-riser")
    before = platform.starts("late-riser")
    # Its next replica stays loading until the test lets it be ready.
    may_be_ready = tmp_path / "late-riser-may-be-ready"
    control.write_text(json.dumps({"ready_file": str(may_be_ready)}))

    with platform.client() as client:
        waking = [_submit(client, "late-riser") for _ in range(WAKING_TASKS)]
        poll_until(lambda: platform.starts("late-riser") > before, 30, "late-riser waking")
        awake = _submit(client, "early-bird")
        poll_until(lambda: _status(client, awake) in ("SUCCESS", "FAILURE"), 30, "the early-bird task finished")
        assert _status(client, awake) == "SUCCESS"
        # It ran while late-riser was still loading, and late-riser's tasks are waiting, not failed.
        assert platform.ready_servers("late-riser") == []
        assert {_status(client, task) for task in waking} <= {"PENDING", "STARTED"}

        may_be_ready.touch()
        for task in waking:
            poll_until(lambda task=task: _status(client, task) in ("SUCCESS", "FAILURE"), 60, "a late-riser task")
        results = [client.get(f"/v1/async-tasks/{task}").json() for task in waking]
    assert [r["status"] for r in results] == ["SUCCESS"] * WAKING_TASKS, results
    assert {r["result"]["output"]["num_completion_tokens"] for r in results} == {5}
    assert platform.starts("late-riser") == before + 1  # woken once, by all of them
