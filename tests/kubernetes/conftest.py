"""Fixtures: a Kubernetes API emulator on a free port and the real orchestrator talking to it over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointConfig, InferenceFramework, ModelEndpoint, ObservedState
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator, naming
from model_engine_server.orchestration.kubernetes.client import KubeApi, KubeRetryPolicy
from tests.kubernetes.emulator import KubeEmulator

NAMESPACE = "llm-engine-endpoints"
FAST_RETRY = KubeRetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, forbidden_delay=0.05)


@pytest.fixture
async def emulator() -> AsyncIterator[KubeEmulator]:
    server = KubeEmulator()
    await server.start()
    yield server
    await server.stop()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path, kubernetes_namespace=NAMESPACE, **overrides)


def make_api(emulator: KubeEmulator, retry: KubeRetryPolicy = FAST_RETRY) -> KubeApi:
    configuration = k8s.Configuration(host=emulator.url)
    configuration.retries = False
    return KubeApi(k8s.ApiClient(configuration), NAMESPACE, "llm-engine", retry)


def make_endpoint(name: str = "llama-chat", revision: int = 1, **config: Any) -> ModelEndpoint:
    now = datetime.now(UTC)
    defaults: dict[str, Any] = {
        "model_name": "llama-3-8b-instruct",
        "inference_framework": InferenceFramework.TEXT_GENERATION_INFERENCE,
        "gpus": 1,
        "gpu_type": "nvidia-ampere-a10",
        "memory": "24Gi",
        "cpus": "4",
        "min_workers": 1,
        "max_workers": 2,
        "per_worker": 8,
    }
    defaults.update(config)
    return ModelEndpoint(
        id=f"end-{name}",
        name=name,
        owner="team",
        created_by="alice",
        created_at=now,
        last_updated_at=now,
        config=EndpointConfig(**defaults),
        revision=revision,
    )


OrchestratorFactory = Callable[..., Awaitable[KubernetesOrchestrator]]


async def applied(orchestrator: KubernetesOrchestrator, name: str = "llama-chat", **config: Any) -> ModelEndpoint:
    """``make_endpoint(name, **config)``, applied: its objects now exist in the emulator."""
    endpoint = make_endpoint(name, **config)
    await orchestrator.apply(endpoint)
    return endpoint


@pytest.fixture
async def make_orchestrator(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[OrchestratorFactory]:
    started: list[KubernetesOrchestrator] = []

    async def factory(retry: KubeRetryPolicy = FAST_RETRY, **overrides: Any) -> KubernetesOrchestrator:
        orchestrator = KubernetesOrchestrator(
            make_settings(tmp_path, **overrides), api=make_api(emulator, retry), retry=retry
        )
        await orchestrator.start()
        started.append(orchestrator)
        await wait_until(orchestrator, lambda: orchestrator.cache.synced)
        return orchestrator

    yield factory
    for orchestrator in started:
        await orchestrator.close()
        orchestrator.api.api_client.close()


@pytest.fixture
async def orchestrator(make_orchestrator: OrchestratorFactory) -> KubernetesOrchestrator:
    return await make_orchestrator()


async def wait_until(
    orchestrator: KubernetesOrchestrator, condition: Callable[[], bool], timeout: float = 10.0
) -> None:
    """Wake on every cache change (wait_for_change) until ``condition`` holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError("condition not reached before the deadline")
        await orchestrator.wait_for_change(min(remaining, 0.5))


async def observe_until(
    orchestrator: KubernetesOrchestrator,
    endpoint: ModelEndpoint,
    condition: Callable[[ObservedState], bool],
    timeout: float = 10.0,
) -> ObservedState:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await orchestrator.observe(endpoint)
        if condition(state):
            return state
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"last observed state: {state}")
        await orchestrator.wait_for_change(min(remaining, 0.5))


# --- the test-side "cluster": what the Deployment controller, scheduler and kubelet would write -------------------


def deployment_of(emulator: KubeEmulator, endpoint: ModelEndpoint) -> dict[str, Any]:
    obj = emulator.get("apps", "deployments", NAMESPACE, naming.resource_name(endpoint))
    assert obj is not None, "no Deployment"
    return obj


def deployment_status(deployment: dict[str, Any], replicas: int, ready: int) -> dict[str, Any]:
    """The status patch a Deployment controller writes: the current generation, ``ready`` of ``replicas`` up."""
    return {
        "status": {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": replicas - ready or None,
        }
    }


def pod_of(deployment: dict[str, Any], suffix: str, status: dict[str, Any]) -> dict[str, Any]:
    """A pod of ``deployment`` (or of a Job: any owner with a pod template), with its labels and spec, in
    ``status``."""
    name = deployment["metadata"]["name"]
    owner = {
        "apiVersion": deployment.get("apiVersion", "apps/v1"),
        "kind": deployment.get("kind", "Deployment"),
        "name": name,
        "uid": deployment["metadata"]["uid"],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{suffix}",
            "labels": deployment["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [owner],
        },
        "spec": deployment["spec"]["template"]["spec"],
        "status": status,
    }


def roll_out(emulator: KubeEmulator, endpoint: ModelEndpoint, available: int | None = None) -> None:
    """The Deployment controller reports the current generation rolled out with ``available`` ready replicas."""
    deployment = deployment_of(emulator, endpoint)
    replicas = deployment["spec"]["replicas"]
    ready = replicas if available is None else available
    emulator.patch(
        "apps", "deployments", NAMESPACE, deployment["metadata"]["name"], deployment_status(deployment, replicas, ready)
    )


def add_pod(emulator: KubeEmulator, endpoint: ModelEndpoint, suffix: str, status: dict[str, Any]) -> None:
    emulator.put("", "pods", NAMESPACE, pod_of(deployment_of(emulator, endpoint), suffix, status))
