"""Each way a rollout fails becomes UPDATE_FAILED with a reason a person can act on.

The failures are simulated the way a cluster reports them: the scheduler writes a PodScheduled condition, the kubelet
writes container states, the Deployment controller writes its Progressing condition.
"""

from __future__ import annotations

from typing import Any

import pytest

from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator, naming
from tests.kubernetes.conftest import NAMESPACE, add_pod, applied, observe_until, roll_out
from tests.kubernetes.emulator import KubeEmulator


def waiting(reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": "engine",
                "image": "ghcr.io/huggingface/text-generation-inference:9.9",
                "ready": False,
                "restartCount": extra.pop("restarts", 0),
                "state": {"waiting": {"reason": reason, "message": message}},
                **extra,
            }
        ]
    }


FAILURES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "unschedulable",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
        ["no node has 1 GPU of type nvidia-ampere-a10 free", "Insufficient nvidia.com/gpu"],
    ),
    (
        "no-gpu-node-type",
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
                }
            ],
        },
        ["no node carries the label for gpu_type 'nvidia-ampere-a10'"],
    ),
    (
        "image-pull-backoff",
        {"phase": "Pending", **waiting("ImagePullBackOff", 'Back-off pulling image "x"')},
        ["cannot pull image ghcr.io/huggingface/text-generation-inference:9.9 (ImagePullBackOff)", "image tag"],
    ),
    (
        "err-image-pull",
        {"phase": "Pending", **waiting("ErrImagePull", "manifest unknown")},
        ["(ErrImagePull)", "manifest unknown"],
    ),
    (
        "crash-loop",
        {
            "phase": "Running",
            **waiting(
                "CrashLoopBackOff",
                "back-off 5m0s restarting failed container",
                restarts=6,
                lastState={"terminated": {"exitCode": 139, "reason": "Error"}},
            ),
        },
        ["keeps crashing (exit code 139, 6 restarts", "kubectl logs --previous"],
    ),
    (
        "model-load-failure",
        {
            "phase": "Running",
            **waiting(
                "CrashLoopBackOff",
                "",
                restarts=2,
                lastState={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "Error: DownloadError\nRepository Not Found for url: https://huggingface.co/x/y",
                    }
                },
            ),
        },
        ["model failed to load (exit code 1)", "Repository Not Found"],
    ),
    (
        "oom-killed",
        {
            "phase": "Running",
            **waiting(
                "CrashLoopBackOff", "", restarts=1, lastState={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
            ),
        },
        ["ran out of memory (OOMKilled)", "raise memory"],
    ),
    (
        "checkpoint-download-failure",
        {
            "phase": "Pending",
            "initContainerStatuses": [
                {
                    "name": "download-checkpoint",
                    "image": "amazon/aws-cli",
                    "ready": False,
                    "restartCount": 3,
                    "state": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "fatal error: An error occurred (AccessDenied) when calling ListObjects",
                        }
                    },
                }
            ],
        },
        ["checkpoint download failed", "AccessDenied"],
    ),
]


@pytest.mark.parametrize(("pod_status", "expected"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES])
async def test_pod_failures_become_update_failed_with_an_actionable_reason(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator, pod_status: dict[str, Any], expected: list[str]
) -> None:
    endpoint = await applied(orchestrator)
    roll_out(emulator, endpoint, available=0)
    add_pod(emulator, endpoint, "x1", pod_status)

    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.UPDATE_FAILED)
    assert (state.available_workers, state.unavailable_workers, state.missing) == (0, 1, False)
    for fragment in expected:
        assert fragment in (state.reason or ""), state.reason


async def test_a_stalled_rollout_fails_with_the_controllers_message(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator)
    roll_out(emulator, endpoint, available=0)
    emulator.patch(
        "apps",
        "deployments",
        NAMESPACE,
        naming.resource_name(endpoint),
        {
            "status": {
                "conditions": [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "x" has timed out progressing.',
                    }
                ]
            }
        },
    )
    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.UPDATE_FAILED)
    assert state.reason == 'Rollout made no progress: ReplicaSet "x" has timed out progressing.'


async def test_a_pod_that_recovers_clears_the_failure(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator)
    roll_out(emulator, endpoint, available=0)
    add_pod(emulator, endpoint, "x1", {"phase": "Pending", **waiting("ErrImagePull", "timeout")})
    await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.UPDATE_FAILED)

    add_pod(
        emulator,
        endpoint,
        "x1",
        {
            "phase": "Running",
            "containerStatuses": [{"name": "engine", "ready": True, "restartCount": 0, "state": {"running": {}}}],
        },
    )
    roll_out(emulator, endpoint)
    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.READY)
    assert state.reason is None and state.available_workers == 1


async def test_slow_loading_pods_are_in_progress_not_failed(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator, min_workers=2, max_workers=2)
    roll_out(emulator, endpoint, available=1)
    add_pod(
        emulator,
        endpoint,
        "x1",
        {
            "phase": "Running",
            "containerStatuses": [{"name": "engine", "ready": False, "restartCount": 0, "state": {"running": {}}}],
        },
    )
    state = await observe_until(orchestrator, endpoint, lambda s: s.reason == "1 of 2 workers available")
    assert (state.status, state.available_workers, state.unavailable_workers) == (
        EndpointStatus.UPDATE_IN_PROGRESS,
        1,
        1,
    )
