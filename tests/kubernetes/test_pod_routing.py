"""Per-pod routing: the gateway's resolver follows EndpointSlices through the official client, over real HTTP.

The orchestrator writes the Deployment and Service; the test plays kubelet (pods with IPs and readiness) and the
EndpointSlice controller (``sync_endpoint_slices``); the resolver must answer exactly the ready pods' addresses.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from model_engine_server.config import OrchestratorKind
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.orchestration.factory import build_upstream_resolver
from model_engine_server.orchestration.kubernetes import (
    KubernetesOrchestrator,
    KubernetesPodResolver,
    KubernetesServiceResolver,
    naming,
)
from model_engine_server.orchestration.kubernetes.engines import CONTAINER_PORT
from model_engine_server.orchestration.kubernetes.rbac import ROUTING_RULES
from model_engine_server.orchestration.kubernetes.routing import FORBIDDEN_HINT, ready_pod_urls
from model_engine_server.testing import eventually_async
from tests.kubernetes.conftest import FAST_RETRY, NAMESPACE, add_pod, make_api, make_endpoint, make_settings
from tests.kubernetes.emulator import KubeEmulator
from tests.kubernetes.endpoint_slices import sync_endpoint_slices
from tests.kubernetes.test_rbac_and_leader import rbac_verb

PORT = CONTAINER_PORT  # the inference container's port, named by the Service's target port


def pod_status(ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "phase": "Running",
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }


@pytest.fixture
async def resolver(emulator: KubeEmulator, tmp_path: Path) -> AsyncIterator[KubernetesPodResolver]:
    pods = KubernetesPodResolver(make_settings(tmp_path), api=make_api(emulator), retry=FAST_RETRY)
    yield pods
    pods.close()


@pytest.fixture
async def endpoint(orchestrator: KubernetesOrchestrator) -> ModelEndpoint:
    endpoint = make_endpoint()
    await orchestrator.apply(endpoint)
    return endpoint


async def answers(
    resolver: KubernetesPodResolver, endpoint: ModelEndpoint, accept: Callable[[list[str]], bool]
) -> list[str]:
    return await eventually_async(lambda: resolver.upstreams(endpoint), accept, what="the resolver's answer")


def pod_urls(*ips: str) -> list[str]:
    return [f"http://{ip}:{PORT}" for ip in ips]


async def test_ready_pods_come_and_go(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint
) -> None:
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    add_pod(emulator, endpoint, "b", pod_status("10.0.0.2"))
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1", "10.0.0.2"))

    add_pod(emulator, endpoint, "c", pod_status("10.0.0.3"))  # scaled up
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: len(urls) == 3)

    emulator.remove("", "pods", NAMESPACE, f"{emulator.list('', 'pods', NAMESPACE)[0]['metadata']['name']}")
    sync_endpoint_slices(emulator, NAMESPACE)  # scaled down: the first pod is gone
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.2", "10.0.0.3"))


async def test_readiness_flips_and_draining_pods_leave_the_answer(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint
) -> None:
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    add_pod(emulator, endpoint, "b", pod_status("10.0.0.2", ready=False))  # still loading the model
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1"))

    pods = {p["metadata"]["name"][-1]: p["metadata"]["name"] for p in emulator.list("", "pods", NAMESPACE)}
    emulator.patch("", "pods", NAMESPACE, pods["b"], {"status": pod_status("10.0.0.2")})
    emulator.patch("", "pods", NAMESPACE, pods["a"], {"status": pod_status("10.0.0.1", ready=False)})
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.2"))

    # Being deleted (draining its in-flight requests): no new requests, though it still reports ready.
    emulator.patch("", "pods", NAMESPACE, pods["b"], {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == [])


async def test_every_slice_of_the_service_counts_and_other_services_do_not(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint, orchestrator: Any
) -> None:
    other = make_endpoint("other-model")
    await orchestrator.apply(other)
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    add_pod(emulator, other, "x", pod_status("10.0.9.9"))
    sync_endpoint_slices(emulator, NAMESPACE)
    # The controller splits large Services into several slices: a second one for the same Service.
    extra = emulator.get("discovery.k8s.io", "endpointslices", NAMESPACE, f"{naming.resource_name(endpoint)}-slice")
    assert extra is not None
    extra["metadata"] = {"name": "second-slice", "labels": extra["metadata"]["labels"]}
    extra["endpoints"] = [{"addresses": ["10.0.0.7"], "conditions": {"ready": True}}]
    emulator.put("discovery.k8s.io", "endpointslices", NAMESPACE, extra)

    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1", "10.0.0.7"))
    assert await resolver.upstreams(other) == pod_urls("10.0.9.9")


async def test_watch_unavailable_falls_back_to_the_service(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint, tmp_path: Path
) -> None:
    service_url = (await KubernetesServiceResolver(make_settings(tmp_path)).upstreams(endpoint))[0]
    emulator.fail("GET", "/endpointslices", 403, times=1000, message="endpointslices is forbidden")
    assert await resolver.upstreams(endpoint) == [service_url]  # not listed yet
    await eventually_async(lambda: emulator.requests[-1].status == 403 and not resolver.watching)
    assert await resolver.upstreams(endpoint) == [service_url]  # no permission: the Service still works

    emulator.faults.clear()  # granted: the watcher's next attempt lists, and pods are routed to
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1"))


async def test_without_kubernetes_configuration_the_service_is_used(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kubernetes_kubeconfig=tmp_path / "missing-kubeconfig")
    resolver = KubernetesPodResolver(settings)
    endpoint = make_endpoint()
    assert await resolver.upstreams(endpoint) == await KubernetesServiceResolver(settings).upstreams(endpoint)
    assert not resolver.watching


def test_pod_routing_is_a_setting(tmp_path: Path) -> None:
    kubernetes = OrchestratorKind.KUBERNETES
    assert isinstance(build_upstream_resolver(make_settings(tmp_path, orchestrator=kubernetes)), KubernetesPodResolver)
    off = make_settings(tmp_path, orchestrator=kubernetes, kubernetes_pod_routing=False)
    assert isinstance(build_upstream_resolver(off), KubernetesServiceResolver)


async def test_routing_rules_cover_exactly_what_the_resolver_sends(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint
) -> None:
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    sync_endpoint_slices(emulator, NAMESPACE)
    emulator.requests.clear()  # what the orchestrator sent is checked by REQUIRED_RULES
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1"))
    await eventually_async(lambda: any(r.watch for r in emulator.requests))
    used = {(r.group, r.plural, rbac_verb(r, existed=True)) for r in emulator.requests}
    allowed = {
        (g, r, v) for rule in ROUTING_RULES for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert used == allowed


@pytest.mark.parametrize(
    ("slices", "expected"),
    [
        ([], []),
        # unset readiness means ready; a slice without ports has nothing to route to
        ([{"ports": [{"name": "http", "port": 8}], "endpoints": [{"addresses": ["1.1.1.1"]}]}], ["http://1.1.1.1:8"]),
        ([{"ports": None, "endpoints": [{"addresses": ["1.1.1.1"]}]}], []),
        # the named http port wins over others
        (
            [
                {
                    "ports": [{"name": "metrics", "port": 9}, {"name": "http", "port": 8}],
                    "endpoints": [{"addresses": ["1.1.1.1"]}],
                }
            ],
            ["http://1.1.1.1:8"],
        ),
        (
            [
                {
                    "addressType": "IPv6",
                    "ports": [{"name": "http", "port": 8}],
                    "endpoints": [{"addresses": ["fd00::1"]}],
                }
            ],
            ["http://[fd00::1]:8"],
        ),
    ],
)
def test_ready_pod_urls(slices: list[dict[str, Any]], expected: list[str]) -> None:
    assert ready_pod_urls(slices) == expected


async def test_a_dropped_watch_resumes_and_misses_no_change(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint
) -> None:
    add_pod(emulator, endpoint, "a", pod_status("10.0.0.1"))
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1"))
    await eventually_async(lambda: emulator.open_watches("endpointslices") == 1)

    emulator.drop_watches()  # an API server restart: the change below happens while nobody watches
    add_pod(emulator, endpoint, "b", pod_status("10.0.0.2"))
    sync_endpoint_slices(emulator, NAMESPACE)
    await answers(resolver, endpoint, lambda urls: urls == pod_urls("10.0.0.1", "10.0.0.2"))


def refusals(emulator: KubeEmulator) -> int:
    return sum(1 for r in emulator.requests if r.plural == "endpointslices" and r.status == 403)


def watch_logs(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


async def test_a_missing_permission_is_logged_once_with_what_to_do_until_it_changes(
    emulator: KubeEmulator, resolver: KubernetesPodResolver, endpoint: ModelEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="model_engine_server.orchestration.kubernetes.cache")
    emulator.fail("GET", "/endpointslices", 403, times=1000, message="endpointslices is forbidden")
    await resolver.upstreams(endpoint)
    await eventually_async(lambda: refusals(emulator) >= 4, what="the watcher retrying")
    warnings = watch_logs(caplog, logging.WARNING, "watch of endpointslices")
    assert len(warnings) == 1, warnings
    assert "may not list endpointslices" in warnings[0] and FORBIDDEN_HINT in warnings[0]
    assert "LLM_ENGINE_KUBERNETES_POD_ROUTING=false" in warnings[0]

    emulator.faults.clear()  # granted
    await eventually_async(lambda: watch_logs(caplog, logging.INFO, "endpointslices recovered"), what="recovery")
    assert resolver.watching

    # Revoked, and the open watch cut: failing again is news, and again logged once however often it is retried.
    emulator.fail("GET", "/endpointslices", 403, times=1000, message="endpointslices is forbidden")
    emulator.drop_watches()
    forbidden = lambda: watch_logs(caplog, logging.WARNING, FORBIDDEN_HINT)  # noqa: E731
    await eventually_async(lambda: len(forbidden()) == 2, what="failing again logged")
    before = refusals(emulator)
    await eventually_async(lambda: refusals(emulator) >= before + 4, what="more retries")
    assert len(forbidden()) == 2
