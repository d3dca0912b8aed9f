"""From cached objects to ``ObservedState``: what an operator would conclude looking at ``kubectl describe``.

Pure functions over the JSON objects the watches deliver, so each failure mode is testable on its own and the
emulator tests only need to write the same status fields a kubelet or scheduler would.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState

Obj = dict[str, Any]

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
IDLE_AT_ZERO = "Idle: scaled to zero workers; the next request wakes one"
WAKING = "Waking up from zero workers: starting a worker for waiting requests"
MAX_MESSAGE = 400  # status reasons stay readable; the full text is in `kubectl describe`


def derive_state(
    deployment: Obj, pods: list[Obj], gpus: int, gpu_type: str | None, scale_to_zero: bool
) -> ObservedState:
    status = deployment.get("status", {})
    desired = int(deployment.get("spec", {}).get("replicas", 1))
    available = int(status.get("availableReplicas", 0) or 0)
    unavailable = int(status.get("unavailableReplicas", 0) or 0) or max(0, desired - available)

    def state(kind: EndpointStatus, reason: str | None = None) -> ObservedState:
        return ObservedState(status=kind, available_workers=available, unavailable_workers=unavailable, reason=reason)

    if _rolled_out(deployment, desired, available):
        if desired == 0 and scale_to_zero:
            return state(EndpointStatus.READY, IDLE_AT_ZERO)
        return state(EndpointStatus.READY)
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue  # old pods on their way out say nothing about the new revision
        failure = pod_failure(pod, gpus, gpu_type)
        if failure:
            return state(EndpointStatus.UPDATE_FAILED, failure)
    stuck = _condition(deployment, "Progressing")
    if stuck and stuck.get("status") == "False" and stuck.get("reason") == "ProgressDeadlineExceeded":
        return state(EndpointStatus.UPDATE_FAILED, f"Rollout made no progress: {_short(stuck.get('message'))}")
    return state(EndpointStatus.UPDATE_IN_PROGRESS, f"{available} of {desired} workers available")


def while_scaling(endpoint: ModelEndpoint, state: ObservedState) -> ObservedState:
    """A READY endpoint that may run at zero workers stays READY while it wakes or grows (requests wait for it;
    the published client knows no "scaling" status); the reason says what is going on."""
    scaling = state.status is EndpointStatus.UPDATE_IN_PROGRESS and not state.missing
    if not (scaling and endpoint.status is EndpointStatus.READY and endpoint.config.min_workers == 0):
        return state
    desired = state.available_workers + state.unavailable_workers
    reason = WAKING if state.available_workers == 0 else f"Scaling: {state.available_workers} of {desired} ready"
    return replace(state, status=EndpointStatus.READY, reason=reason)


def _rolled_out(deployment: Obj, desired: int, available: int) -> bool:
    status = deployment.get("status", {})
    generation = int(deployment.get("metadata", {}).get("generation", 0) or 0)
    observed = int(status.get("observedGeneration", 0) or 0)
    if observed < generation:
        return False  # the controller has not even looked at the latest spec yet
    updated = int(status.get("updatedReplicas", 0) or 0)
    total = int(status.get("replicas", 0) or 0)
    # All replicas run the latest template and are available; no surplus old pods remain.
    return updated >= desired and available >= desired and total <= desired


def _condition(obj: Obj, kind: str) -> Obj | None:
    for condition in obj.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def pod_failure(pod: Obj, gpus: int, gpu_type: str | None) -> str | None:
    """The reason a person can act on, or None when this pod is fine or merely slow."""
    name = pod.get("metadata", {}).get("name", "?")
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return _unschedulable(name, scheduled.get("message") or "", gpus, gpu_type)
    status = pod.get("status", {})
    for container in status.get("initContainerStatuses", []) or []:
        problem = _container_failure(container, init=True)
        if problem:
            return f"Pod {name}: {problem}"
    for container in status.get("containerStatuses", []) or []:
        problem = _container_failure(container, init=False)
        if problem:
            return f"Pod {name}: {problem}"
    return None


def _unschedulable(name: str, message: str, gpus: int, gpu_type: str | None) -> str:
    if "nvidia.com/gpu" in message:
        want = f"{gpus} GPU{'s' if gpus != 1 else ''}" + (f" of type {gpu_type}" if gpu_type else "")
        return (
            f"Cannot schedule pod {name}: no node has {want} free. Add GPU nodes, lower gpus/num_shards, or "
            f"choose another gpu_type. Scheduler: {_short(message)}"
        )
    if "node affinity/selector" in message or "didn't match Pod's node affinity" in message:
        return (
            f"Cannot schedule pod {name}: no node carries the label for gpu_type {gpu_type!r}. "
            f"Scheduler: {_short(message)}"
        )
    return f"Cannot schedule pod {name}: {_short(message)}"


def _container_failure(container: Obj, init: bool) -> str | None:
    what = "checkpoint download" if init else f"container {container.get('name', '?')}"
    state = container.get("state", {}) or {}
    last = (container.get("lastState", {}) or {}).get("terminated") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    reason = waiting.get("reason")
    if reason in IMAGE_PULL_REASONS:
        image = container.get("image", "")
        return (
            f"cannot pull image {image} ({reason}): check the image tag and registry credentials. "
            f"{_short(waiting.get('message'))}"
        ).rstrip()
    if reason in CONFIG_REASONS:
        return f"{what} cannot start ({reason}): {_short(waiting.get('message'))}"
    if "OOMKilled" in (terminated.get("reason"), last.get("reason")):
        return f"{what} ran out of memory (OOMKilled): raise memory or use a smaller model/quantization."
    crashed = terminated if terminated and terminated.get("exitCode", 0) != 0 else last
    if reason == "CrashLoopBackOff" or (terminated and terminated.get("exitCode", 0) != 0):
        message = crashed.get("message")
        if message:
            label = "checkpoint download failed" if init else "model failed to load"
            return f"{what}: {label} (exit code {crashed.get('exitCode', '?')}): {_short(message)}"
        restarts = container.get("restartCount", 0)
        return (
            f"{what} keeps crashing (exit code {crashed.get('exitCode', '?')}, {restarts} restarts, "
            f"{crashed.get('reason') or 'Error'}); see `kubectl logs --previous`."
        )
    return None


def _short(message: Any) -> str:
    text = " ".join(str(message or "").split())
    return text if len(text) <= MAX_MESSAGE else text[-MAX_MESSAGE:]  # the end of a log holds the error
