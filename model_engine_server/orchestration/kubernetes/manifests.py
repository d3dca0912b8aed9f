"""The Kubernetes objects of one endpoint, as plain dicts ready for server-side apply.

Pure functions of (endpoint, settings, model zoo): no API calls, so every manifest can be validated offline
(``tests/kubernetes/test_manifests.py`` runs the whole matrix through ``kubernetes-validate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointConfig, ModelEndpoint
from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.domain.model_zoo import ModelZoo, ZooEntry
from model_engine_server.orchestration.kubernetes import naming
from model_engine_server.orchestration.kubernetes.engines import (
    CHECKPOINT_DIR,
    CONTAINER_PORT,
    ENGINES,
    MODEL_DIR,
    EngineKind,
    EngineWeights,
    select_engine,
)

Manifest = dict[str, Any]

CONTAINER_NAME = "engine"
SERVICE_PORT = 80
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CONTEXT_LENGTH = 4096  # for a checkpoint_path whose model_name the zoo does not know
# Probe budgets: a 70B model can take half an hour to load on a cold node; readiness reacts within seconds.
STARTUP_BUDGET_SECONDS_GPU = 45 * 60
STARTUP_BUDGET_SECONDS_CPU = 15 * 60
STARTUP_PERIOD_SECONDS = 10
SHM_SIZE = "1Gi"


@dataclass(frozen=True)
class EndpointManifests:
    name: str
    deployment: Manifest
    service: Manifest
    pdb: Manifest
    hpa: Manifest | None  # exactly one of hpa / scaled_object is set
    scaled_object: Manifest | None

    def children(self) -> list[Manifest]:
        """Objects owned by the Deployment, in apply order."""
        autoscaler = self.hpa if self.hpa is not None else self.scaled_object
        assert autoscaler is not None
        return [self.service, autoscaler, self.pdb]


def uses_keda(config: EndpointConfig, settings: Settings) -> bool:
    return config.min_workers == 0 and settings.kubernetes_keda_enabled


def build_manifests(
    endpoint: ModelEndpoint,
    settings: Settings,
    zoo: ModelZoo,
    *,
    current_replicas: int | None = None,
    engine: EngineKind | None = None,
) -> EndpointManifests:
    """All objects of ``endpoint``. ``current_replicas`` (from the watch cache) keeps the autoscaler's choice on
    re-apply, clamped into the new ``[min, max]``; ``engine`` overrides the automatic engine choice (tests)."""
    config = endpoint.config
    name = naming.resource_name(endpoint)
    keda = uses_keda(config, settings)
    return EndpointManifests(
        name=name,
        deployment=deployment_manifest(endpoint, settings, zoo, _replicas(config, keda, current_replicas), engine),
        service=service_manifest(endpoint, settings),
        pdb=pdb_manifest(endpoint, settings),
        hpa=None if keda else hpa_manifest(endpoint, settings),
        scaled_object=scaled_object_manifest(endpoint, settings) if keda else None,
    )


def _replicas(config: EndpointConfig, keda: bool, current: int | None) -> int:
    # A new Deployment starts with a worker unless KEDA runs it (then the first request wakes it). An existing one
    # keeps its count within [min, max]: zero when it sleeps (KEDA's or the reconciler's call, see set_asleep).
    if current is None:
        return config.min_workers if keda else max(1, config.min_workers)
    return min(max(current, config.min_workers), max(1, config.max_workers))


def _metadata(endpoint: ModelEndpoint, settings: Settings, **extra: Any) -> Manifest:
    return {
        "name": naming.resource_name(endpoint),
        "namespace": settings.kubernetes_namespace,
        "labels": naming.common_labels(endpoint),
        **extra,
    }


def _model_source(endpoint: ModelEndpoint, zoo: ModelZoo) -> EngineWeights:
    config = endpoint.config
    entry: ZooEntry | None = zoo.get(config.model_name)
    if entry is None and not config.checkpoint_path:
        raise OrchestrationError(
            f"model_name {config.model_name!r} is not in the model zoo and no checkpoint_path was given."
        )
    context = entry.context_length if entry else DEFAULT_CONTEXT_LENGTH
    max_input = entry.max_input_tokens if entry else context - min(1024, context // 4)
    model_id = CHECKPOINT_DIR if config.checkpoint_path else entry.hf_repo  # type: ignore[union-attr]
    return EngineWeights(
        model_id=model_id, served_name=config.model_name, context_length=context, max_input_tokens=max_input
    )


def deployment_manifest(
    endpoint: ModelEndpoint,
    settings: Settings,
    zoo: ModelZoo,
    replicas: int,
    engine: EngineKind | None = None,
) -> Manifest:
    config = endpoint.config
    kind = engine or select_engine(config, settings)
    adapter = ENGINES[kind]
    source = _model_source(endpoint, zoo)
    volumes, mounts, init_containers = _storage(endpoint, settings)
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": adapter.image(config, settings),
        "command": adapter.command(),
        "args": adapter.args(config, source),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": _env(settings, kind),
        "resources": _resources(config),
        "volumeMounts": mounts,
        "startupProbe": _probe(
            period=STARTUP_PERIOD_SECONDS,
            failures=(STARTUP_BUDGET_SECONDS_GPU if config.gpus else STARTUP_BUDGET_SECONDS_CPU)
            // STARTUP_PERIOD_SECONDS,
        ),
        "readinessProbe": _probe(period=5, failures=3),
        "livenessProbe": _probe(period=15, failures=4),
        # A failed model load leaves its last log lines here, which observe() turns into the status reason.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: Manifest = {
        "serviceAccountName": settings.kubernetes_endpoint_service_account,
        "automountServiceAccountToken": False,  # engines never call the Kubernetes API
        "terminationGracePeriodSeconds": settings.kubernetes_termination_grace_seconds,
        "containers": [container],
        "volumes": volumes,
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if config.gpus > 0:
        gpu_type = config.gpu_type or _zoo_gpu_type(config, zoo)
        if gpu_type:
            pod_spec["nodeSelector"] = {settings.kubernetes_gpu_node_label: gpu_type}
        pod_spec["tolerations"] = [
            {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in settings.kubernetes_gpu_tolerations
        ]
    annotations = {
        naming.ENDPOINT_ID_ANNOTATION: endpoint.id,
        naming.ENDPOINT_NAME_ANNOTATION: endpoint.name,
        naming.REVISION_ANNOTATION: str(endpoint.revision),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(endpoint, settings, annotations=annotations),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": naming.selector_labels(endpoint)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            # Long enough for the slowest startup probe, so a stuck rollout is reported, not a slow load.
            "progressDeadlineSeconds": STARTUP_BUDGET_SECONDS_GPU + 600,
            "template": {
                "metadata": {"labels": naming.common_labels(endpoint)},
                "spec": pod_spec,
            },
        },
    }


def _zoo_gpu_type(config: EndpointConfig, zoo: ModelZoo) -> str | None:
    entry = zoo.get(config.model_name)
    return entry.gpu_type if entry else None


def _probe(*, period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _resources(config: EndpointConfig) -> Manifest:
    requests: dict[str, str] = {"cpu": str(config.cpus), "memory": str(config.memory)}
    limits: dict[str, str] = {"memory": str(config.memory)}
    if config.storage:
        requests["ephemeral-storage"] = str(config.storage)
    if config.gpus > 0:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(config.gpus)
    return {"requests": requests, "limits": limits}


def _env(settings: Settings, kind: EngineKind) -> list[Manifest]:
    env: list[Manifest] = [{"name": "PORT", "value": str(CONTAINER_PORT)}]
    if kind == EngineKind.TGI:
        env.append({"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "1"})
    if kind == EngineKind.BUILTIN:  # the built-in server reads this setting itself; TGI and vLLM cache on their own
        env.append({"name": "LLM_ENGINE_PREFIX_CACHE_MB", "value": str(settings.prefix_cache_mb)})
    if settings.kubernetes_hf_token_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": settings.kubernetes_hf_token_secret, "key": "HF_TOKEN"}},
            }
        )
    return env


def _storage(endpoint: ModelEndpoint, settings: Settings) -> tuple[list[Manifest], list[Manifest], list[Manifest]]:
    """Volumes, engine mounts and init containers: /dev/shm always, plus the checkpoint when one is given."""
    config = endpoint.config
    volumes: list[Manifest] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}]
    mounts: list[Manifest] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    path = config.checkpoint_path
    if not path:
        return volumes, mounts, []
    if path.startswith("pvc://"):
        claim, _, sub_path = path.removeprefix("pvc://").partition("/")
        if not claim:
            raise OrchestrationError(f"checkpoint_path {path!r} names no PersistentVolumeClaim (pvc://CLAIM/PATH).")
        volumes.append({"name": "checkpoint", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mount: Manifest = {"name": "checkpoint", "mountPath": CHECKPOINT_DIR, "readOnly": True}
        if sub_path.strip("/"):
            mount["subPath"] = sub_path.strip("/")
        mounts.append(mount)
        return volumes, mounts, []
    if path.startswith("s3://"):
        image = settings.kubernetes_s3_download_image
        command = ["aws", "s3", "sync", "--only-show-errors", path, CHECKPOINT_DIR]
    elif path.startswith("gs://"):
        image = settings.kubernetes_gcs_download_image
        command = ["gcloud", "storage", "rsync", "--recursive", path, CHECKPOINT_DIR]
    else:
        raise OrchestrationError(
            f"checkpoint_path {path!r} is not usable on Kubernetes: use s3://BUCKET/PATH, gs://BUCKET/PATH "
            "or pvc://CLAIM/PATH."
        )
    cache: Manifest = {"medium": ""}
    if config.storage:
        cache["sizeLimit"] = str(config.storage)
    volumes.append({"name": "model-cache", "emptyDir": cache})
    mounts.append({"name": "model-cache", "mountPath": MODEL_DIR})
    init: Manifest = {
        "name": "download-checkpoint",
        "image": image,
        "command": command,
        "volumeMounts": [{"name": "model-cache", "mountPath": MODEL_DIR}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.kubernetes_checkpoint_credentials_secret:
        init["envFrom"] = [{"secretRef": {"name": settings.kubernetes_checkpoint_credentials_secret}}]
    return volumes, mounts, [init]


def service_manifest(endpoint: ModelEndpoint, settings: Settings) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(endpoint, settings),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(endpoint),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def hpa_manifest(endpoint: ModelEndpoint, settings: Settings) -> Manifest:
    config = endpoint.config
    low = max(1, config.min_workers)
    pods = {
        "metric": {"name": settings.kubernetes_hpa_metric_name},
        "target": {"type": "AverageValue", "averageValue": str(config.per_worker)},
    }
    return _scaler(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        endpoint,
        settings,
        minReplicas=low,
        maxReplicas=max(low, config.max_workers),
        metrics=[{"type": "Pods", "pods": pods}],
    )


def scaled_object_manifest(endpoint: ModelEndpoint, settings: Settings) -> Manifest:
    config = endpoint.config
    query = settings.kubernetes_keda_query_template.format(
        endpoint_id=endpoint.id, namespace=settings.kubernetes_namespace
    )
    trigger = {
        "serverAddress": settings.kubernetes_keda_prometheus_url,
        "query": query,
        "threshold": str(config.per_worker),
        "activationThreshold": "0",
    }
    return _scaler(
        "keda.sh/v1alpha1",
        "ScaledObject",
        endpoint,
        settings,
        minReplicaCount=0,
        maxReplicaCount=max(1, config.max_workers),
        cooldownPeriod=round(settings.scale_to_zero_idle_seconds),  # idle this long: to zero
        triggers=[{"type": "prometheus", "metadata": trigger}],
    )


def _scaler(api_version: str, kind: str, endpoint: ModelEndpoint, settings: Settings, **spec: Any) -> Manifest:
    """An autoscaler object (HPA or KEDA ScaledObject) that scales the endpoint's Deployment."""
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": naming.resource_name(endpoint)}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": _metadata(endpoint, settings),
        "spec": {"scaleTargetRef": target, **spec},
    }


def pdb_manifest(endpoint: ModelEndpoint, settings: Settings) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(endpoint, settings),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": naming.selector_labels(endpoint)}},
    }


def owned_by(manifest: Manifest, deployment_name: str, deployment_uid: str) -> Manifest:
    """``manifest`` with the Deployment as owner, so deleting the Deployment garbage-collects it."""
    metadata = dict(manifest["metadata"])
    metadata["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name,
            "uid": deployment_uid,
        }
    ]
    return {**manifest, "metadata": metadata}
