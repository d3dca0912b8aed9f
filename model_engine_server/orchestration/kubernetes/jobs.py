"""Jobs on Kubernetes: one indexed ``batch/v1`` Job per job record, run by the engine image.

``completions`` = ``parallelism`` = the job's workers, in Indexed completion mode: each pod gets
``JOB_COMPLETION_INDEX`` and runs ``model-engine <entrypoint> --job-id <id>``, reading and writing the job's workspace
in object storage (S3 credentials from the pod's ServiceAccount or the checkpoint-credentials Secret).
``activeDeadlineSeconds`` enforces ``max_runtime_sec``; a pod that dies is replaced up to ``backoffLimit`` times and
resumes from the workspace (a fine-tune from its last checkpoint); an evicted or preempted pod is replaced without
counting against that limit, and a worker that gives up on purpose (``EXIT_JOB_ERROR``) fails the Job at once
(``podFailurePolicy``); finished Jobs are removed after ``ttlSecondsAfterFinished``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from model_engine_server.config import Settings
from model_engine_server.domain.jobs import EXIT_JOB_ERROR, JOB_ENTRYPOINTS, Job, RunObservation, RunState
from model_engine_server.orchestration.kubernetes import naming
from model_engine_server.orchestration.kubernetes.cache import ObjectCache
from model_engine_server.orchestration.kubernetes.client import PODS, KubeApi, KubeRetryPolicy, Resource
from model_engine_server.orchestration.kubernetes.status import pod_failure

if TYPE_CHECKING:
    from model_engine_server.orchestration.kubernetes.orchestrator import KubernetesOrchestrator

JOBS = Resource("Job", "batch", "v1", "jobs", "BatchV1Api", "namespaced_job")
JOB_ID_LABEL = "llm-engine.io/job-id"


def job_name(job: Job) -> str:
    return f"llm-engine-{job.id}"[:63].rstrip("-")


def job_manifest(settings: Settings, job: Job) -> dict[str, Any]:
    resources = job.resources
    requests: dict[str, Any] = {"cpu": resources.cpus, "memory": resources.memory}
    limits: dict[str, Any] = {"memory": resources.memory}
    if resources.gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = resources.gpus
    env = [
        {"name": "LLM_ENGINE_OBJECT_STORE_URL", "value": settings.object_store_url},
        {"name": "LLM_ENGINE_S3_ENDPOINT_URL", "value": settings.s3_endpoint_url},
        {"name": "LLM_ENGINE_S3_REGION", "value": settings.s3_region},
        {"name": "LLM_ENGINE_ORCHESTRATOR", "value": "kubernetes"},
        {"name": "LLM_ENGINE_MODEL_CACHE_DIR", "value": "/models"},
    ]
    container: dict[str, Any] = {
        "name": "worker",
        "image": job.image or f"{settings.builtin_image_repository}:{settings.builtin_image_tag}",
        "args": [JOB_ENTRYPOINTS[job.kind], "--job-id", job.id],
        "env": env,
        "resources": {"requests": requests, "limits": limits},
        "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if settings.kubernetes_checkpoint_credentials_secret:
        container["envFrom"] = [
            {"secretRef": {"name": settings.kubernetes_checkpoint_credentials_secret, "optional": True}}
        ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.kubernetes_endpoint_service_account,
        "containers": [container],
        "volumes": [{"name": "models", "emptyDir": {}}, {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if resources.gpus:
        if resources.gpu_type:
            pod["nodeSelector"] = {settings.kubernetes_gpu_node_label: resources.gpu_type}
        pod["tolerations"] = [
            {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in settings.kubernetes_gpu_tolerations
        ]
    labels = {naming.MANAGED_BY_LABEL: naming.MANAGED_BY_VALUE, JOB_ID_LABEL: job.id}
    return {
        "apiVersion": JOBS.api_version,
        "kind": JOBS.kind,
        "metadata": {"name": job_name(job), "labels": labels},
        "spec": {
            "completionMode": "Indexed",
            "completions": job.parallelism,
            "parallelism": job.parallelism,
            "backoffLimit": settings.job_max_restarts,
            "podFailurePolicy": {
                "rules": [
                    # The worker gave up on purpose (bad data, model not found) and said why: no retry helps.
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [EXIT_JOB_ERROR]},
                    },
                    # An evicted or preempted pod is replaced without using up a retry; it resumes from the workspace.
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "activeDeadlineSeconds": job.max_runtime_sec,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def observation(
    job_object: dict[str, Any] | None,
    pods: list[dict[str, Any]] | None = None,
    gpus: int = 0,
    gpu_type: str | None = None,
) -> RunObservation:
    """What a Job's status conditions say (``Complete``, ``Failed`` with its reason, else running), with the reason a
    person can act on from its pods (out of memory, unschedulable, image pull) — for a Job that failed, or one that
    cannot get going. ``gpus`` and ``gpu_type`` are what the job asked for, which the unschedulable reason names."""
    if job_object is None:
        return RunObservation(RunState.MISSING, "the Kubernetes Job does not exist")
    pod_reason = next((r for r in (pod_failure(pod, gpus, gpu_type) for pod in pods or []) if r), None)
    for condition in job_object.get("status", {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return RunObservation(RunState.SUCCEEDED)
        if condition.get("type") == "Failed":
            reason = condition.get("reason", "")
            if reason == "DeadlineExceeded":
                return RunObservation(RunState.FAILED, "runtime exceeded (activeDeadlineSeconds)")
            return RunObservation(
                RunState.FAILED, pod_reason or f"{reason}: {condition.get('message', '')}".strip(": ")
            )
    active = job_object.get("status", {}).get("active") or 0
    return RunObservation(RunState.RUNNING if active else RunState.PENDING, pod_reason)


class KubernetesJobRunner:
    """Jobs through the orchestrator's API client, observed through a watch on managed Jobs; the reconciler is the
    only writer."""

    def __init__(self, settings: Settings, orchestrator: KubernetesOrchestrator) -> None:
        self._settings = settings
        self._orchestrator = orchestrator
        self._cache: ObjectCache | None = None

    @property
    def _api(self) -> KubeApi:
        return self._orchestrator.api

    def _watched(self) -> ObjectCache:
        """Started on first use: the orchestrator's API client exists only once the orchestrator has started."""
        if self._cache is None:
            self._cache = ObjectCache(
                self._api,
                [JOBS],
                naming.MANAGED_SELECTOR,
                self._settings.kubernetes_watch_timeout_seconds,
                _ignore_change,  # the reconciler's next pass reads the cache
                KubeRetryPolicy(),
            )
            self._cache.start()
        return self._cache

    async def start_job(self, job: Job) -> None:
        # Server-side apply: idempotent. Kubernetes itself replaces dead pods (backoffLimit); they resume.
        applied = await asyncio.to_thread(self._api.apply, JOBS, job_manifest(self._settings, job))
        self._watched().remember(JOBS, applied)

    async def stop_job(self, job: Job) -> None:
        # Background propagation: the Job goes at once, its pods are garbage-collected (terminated) after it.
        await asyncio.to_thread(self._api.delete, JOBS, job_name(job), "Background")
        self._watched().forget(JOBS, job_name(job))

    async def observe_job(self, job: Job) -> RunObservation:
        cache = self._watched()
        if not cache.synced:  # right after start-up: nothing is known yet, so nothing is missing either
            return RunObservation(RunState.PENDING, "waiting for the first list of Jobs")
        pods = self._orchestrator.cache.select(PODS, {JOB_ID_LABEL: job.id})  # job pods are managed: watched there
        return observation(cache.get(JOBS, job_name(job)), pods, job.resources.gpus, job.resources.gpu_type)

    async def close(self) -> None:
        if self._cache is not None:
            await asyncio.to_thread(self._cache.stop)
            self._cache = None


def _ignore_change() -> None:
    return None
