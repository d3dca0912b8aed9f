"""Kubernetes mode on one machine: the SDK against the real gateway, whose reconciler drives the real Kubernetes
orchestrator against the API emulator, while a test-side "node" plays kubelet and Deployment controller.

The node runs the built-in inference server (the Deployment's own command and arguments) for the endpoint's
Deployment, reports the pod's address and readiness into the emulator (and the EndpointSlice controller's slices from
them), and stops the server when the Deployment is deleted. The gateway routes to the pod from its EndpointSlice; the
Service fallback (``kubernetes_service_url_template``) points at the node's port too (the node serves one Deployment
at a time, which is all this test creates).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, OrchestratorKind, Settings
from model_engine_server.orchestration.factory import build_upstream_resolver
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
from model_engine_server.orchestration.reconciler import ReconcilePolicy, Reconciler
from model_engine_server.testing import eventually_async, free_port
from model_engine_server.testing.platform import stop_process
from tests.api.completion_support import serve_on_loopback
from tests.kubernetes.conftest import FAST_RETRY, NAMESPACE, deployment_status, make_api, pod_of
from tests.kubernetes.emulator import KubeEmulator
from tests.kubernetes.endpoint_slices import sync_endpoint_slices

pytestmark = pytest.mark.model

ENDPOINT_KINDS = [
    ("apps", "deployments"),
    ("", "services"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("policy", "poddisruptionbudgets"),
    ("", "pods"),
    ("discovery.k8s.io", "endpointslices"),
]


class Node:
    """Runs the Deployment's container command as a local process and writes what a kubelet would report."""

    def __init__(self, emulator: KubeEmulator, port: int, log: Path) -> None:
        self.emulator = emulator
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.deployment: str | None = None
        self.ready = False
        self.started: list[str] = []

    def command(self, deployment: dict[str, Any]) -> list[str]:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["model-engine", "inference-server"]  # the CPU engine
        args = list(container["args"])
        args[args.index("--port") + 1] = str(self.port)
        args[args.index("--hostname") + 1] = "127.0.0.1"
        executable = shutil.which("model-engine", path=str(Path(sys.executable).parent)) or "model-engine"
        return [executable, "inference-server", *args, "--num-threads", "1"]

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                await self.step(client)
                await asyncio.sleep(0.1)  # a kubelet's sync period, not a test synchronisation

    async def step(self, client: httpx.AsyncClient) -> None:
        deployments = self.emulator.list("apps", "deployments", NAMESPACE)
        if self.deployment and all(d["metadata"]["name"] != self.deployment for d in deployments):
            self.stop()
        for deployment in deployments:
            if self.process is None and deployment["spec"]["replicas"] >= 1:
                self.start(deployment)
        if self.process is not None and not self.ready:
            if self.process.poll() is not None:
                raise AssertionError(f"inference server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://127.0.0.1:{self.port}/health")).status_code == 200:
                    self.mark_ready()
        sync_endpoint_slices(self.emulator, NAMESPACE)

    def start(self, deployment: dict[str, Any]) -> None:
        self.deployment = deployment["metadata"]["name"]
        self.started.append(self.deployment)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(deployment),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        self.emulator.put("", "pods", NAMESPACE, self.pod(deployment, ready=False))
        self.emulator.patch("apps", "deployments", NAMESPACE, self.deployment, deployment_status(deployment, 1, 0))

    def mark_ready(self) -> None:
        assert self.deployment is not None
        deployment = self.emulator.get("apps", "deployments", NAMESPACE, self.deployment)
        if deployment is None:
            return
        self.ready = True
        self.emulator.put("", "pods", NAMESPACE, self.pod(deployment, ready=True))
        self.emulator.patch("apps", "deployments", NAMESPACE, self.deployment, deployment_status(deployment, 1, 1))

    def pod(self, deployment: dict[str, Any], ready: bool) -> dict[str, Any]:
        engine = {"name": "engine", "ready": ready, "restartCount": 0, "state": {"running": {}}}
        status = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [engine],
        }
        pod = pod_of(deployment, "0", status)
        for port in pod["spec"]["containers"][0]["ports"]:  # the process listens on the node's port
            port["containerPort"] = self.port
        return pod

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)
        self.process, self.deployment, self.ready = None, None, False


@contextlib.asynccontextmanager
async def kubernetes_mode_gateway(
    emulator: KubeEmulator, tmp_path: Path, database_url: str, node_port: int
) -> AsyncIterator[str]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        auth_mode=AuthMode.OPEN,
        orchestrator=OrchestratorKind.KUBERNETES,
        kubernetes_namespace=NAMESPACE,
        kubernetes_service_url_template=f"http://127.0.0.1:{node_port}",
    )
    orchestrator = KubernetesOrchestrator(settings, api=make_api(emulator), retry=FAST_RETRY)
    await orchestrator.start()
    reconcilers: list[Reconciler] = []
    app = create_app(
        settings,
        resolver=build_upstream_resolver(settings),
        on_registry_change=lambda: [r.poke() for r in reconcilers],
    )
    async with serve_on_loopback(app) as url:
        reconciler = Reconciler(app.state.services.endpoints, orchestrator, ReconcilePolicy(interval_seconds=0.5))
        reconcilers.append(reconciler)
        task = asyncio.create_task(reconciler.run())
        try:
            yield url
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await orchestrator.close()
            orchestrator.api.api_client.close()


async def poll(check: Any, timeout: float, what: str) -> Any:
    """Run the blocking ``check`` in a thread until it returns something truthy."""
    return await eventually_async(lambda: asyncio.to_thread(check), timeout=timeout, what=what, interval=0.2)


@pytest.mark.timeout(600)
async def test_sdk_creates_serves_and_deletes_an_endpoint_on_the_emulated_cluster(
    emulator: KubeEmulator, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmengine import Completion, Model
    from llmengine.data_types import LLMInferenceFramework

    node = Node(emulator, free_port(), tmp_path / "node.log")
    async with kubernetes_mode_gateway(emulator, tmp_path, sqlite_url, node.port) as url:
        monkeypatch.setenv("LLM_ENGINE_BASE_PATH", url)
        monkeypatch.setenv("SCALE_API_KEY", "alice")
        node_task = asyncio.create_task(node.run())
        try:
            await asyncio.to_thread(
                Model.create,
                name="smol-k8s",
                model="smollm2-135m",
                inference_framework_image_tag="latest",
                inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE,
                gpus=0,
                cpus=1,
                memory="2Gi",
                min_workers=1,
                max_workers=1,
                per_worker=4,
            )

            def ready() -> bool:
                if node_task.done():
                    node_task.result()
                endpoint = Model.get("smol-k8s")
                assert endpoint.status != "UPDATE_FAILED", endpoint.spec
                return endpoint.status == "READY"

            await poll(ready, 420, "READY")
            endpoint = await asyncio.to_thread(Model.get, "smol-k8s")
            assert endpoint.spec.deployment_state.available_workers == 1

            response = await asyncio.to_thread(
                Completion.create, model="smol-k8s", prompt="The capital of France is", max_new_tokens=5, temperature=0
            )
            assert response.output.text and 1 <= response.output.num_completion_tokens <= 5

            events = await asyncio.to_thread(
                lambda: list(
                    Completion.create(
                        model="smol-k8s",
                        prompt="The capital of France is",
                        max_new_tokens=5,
                        temperature=0,
                        stream=True,
                    )
                )
            )
            assert events[-1].output.finished and "".join(e.output.text for e in events) == response.output.text

            await asyncio.to_thread(Model.delete, "smol-k8s")
            await poll(
                lambda: not any(emulator.list(g, p, NAMESPACE) for g, p in ENDPOINT_KINDS),
                60,
                "the namespace to be empty",
            )
            await poll(lambda: node.process is None, 60, "the node to stop the server")
            listed = await asyncio.to_thread(Model.list)
            assert [e.name for e in listed.model_endpoints] == []
            assert len(node.started) == 1
        finally:
            node_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await node_task
            node.stop()
