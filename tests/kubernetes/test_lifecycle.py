"""Create, update, scale, delete and self-healing, through the official client against the API emulator."""

from __future__ import annotations

import dataclasses

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator, KubernetesServiceResolver, naming
from tests.kubernetes.conftest import (
    NAMESPACE,
    OrchestratorFactory,
    add_pod,
    applied,
    deployment_of,
    make_endpoint,
    observe_until,
    roll_out,
    wait_until,
)
from tests.kubernetes.emulator import KubeEmulator

KINDS = [
    ("apps", "deployments"),
    ("", "services"),
    ("autoscaling", "horizontalpodautoscalers"),
    ("policy", "poddisruptionbudgets"),
]


def bumped(endpoint: ModelEndpoint, **config: object) -> ModelEndpoint:
    return dataclasses.replace(
        endpoint, config=dataclasses.replace(endpoint.config, **config), revision=endpoint.revision + 1
    )


async def test_create_applies_owned_labelled_objects_and_reports_ready(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator)

    name = naming.resource_name(endpoint)
    deployment = deployment_of(emulator, endpoint)
    for group, plural in KINDS:
        obj = emulator.get(group, plural, NAMESPACE, name)
        assert obj is not None, plural
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llm-engine"
        assert obj["metadata"]["labels"][naming.ENDPOINT_ID_LABEL] == endpoint.id
        if plural != "deployments":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == deployment["metadata"]["uid"]
    assert all(r.content_type == "application/apply-patch+yaml" for r in emulator.requests if r.method == "PATCH")

    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.UPDATE_IN_PROGRESS)
    assert state.reason == "0 of 1 workers available" and not state.missing

    roll_out(emulator, endpoint)
    state = await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.READY)
    assert (state.available_workers, state.unavailable_workers, state.missing) == (1, 0, False)
    resolver = KubernetesServiceResolver(orchestrator.settings)
    assert await resolver.upstreams(endpoint) == [f"http://{name}.{NAMESPACE}.svc.cluster.local:80"]


async def test_update_rolls_the_deployment_and_reapply_is_a_no_op(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator)
    roll_out(emulator, endpoint)
    await observe_until(orchestrator, endpoint, lambda s: s.status == EndpointStatus.READY)

    updated = bumped(endpoint, inference_framework_image_tag="3.0.1", quantize="bitsandbytes")
    state = await orchestrator.observe(updated)  # the cluster still runs the old revision: re-apply needed
    assert state.missing and state.status == EndpointStatus.UPDATE_IN_PROGRESS and "revision 1" in (state.reason or "")

    await orchestrator.apply(updated)
    deployment = deployment_of(emulator, endpoint)
    engine = deployment["spec"]["template"]["spec"]["containers"][0]
    assert engine["image"].endswith(":3.0.1") and engine["args"][-2:] == ["--quantize", "bitsandbytes"]
    assert deployment["metadata"]["generation"] == 2
    state = await observe_until(orchestrator, updated, lambda s: s.reason == "1 of 1 workers available")
    assert state.status == EndpointStatus.UPDATE_IN_PROGRESS and not state.missing  # generation not rolled out yet

    roll_out(emulator, updated)
    await observe_until(orchestrator, updated, lambda s: s.status == EndpointStatus.READY)
    writes_before = emulator.revision
    await orchestrator.apply(updated)
    assert emulator.revision == writes_before  # idempotent: nothing changed, nothing written
    assert deployment_of(emulator, endpoint)["metadata"]["generation"] == 2


async def test_scaling_keeps_the_autoscalers_choice_within_new_bounds(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator, min_workers=1, max_workers=4)
    name = naming.resource_name(endpoint)
    emulator.patch("apps", "deployments", NAMESPACE, name, {"spec": {"replicas": 3}})  # the HPA scaled up
    await wait_until(
        orchestrator,
        lambda: (
            (orchestrator.cache.get(orchestrator_resource("Deployment"), name) or {}).get("spec", {}).get("replicas")
            == 3
        ),
    )

    wider = bumped(endpoint, max_workers=6, per_worker=4)
    await orchestrator.apply(wider)
    assert deployment_of(emulator, endpoint)["spec"]["replicas"] == 3
    hpa = emulator.get("autoscaling", "horizontalpodautoscalers", NAMESPACE, name)
    assert hpa is not None
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    assert hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "4"

    await wait_until(
        orchestrator,
        lambda: (
            orchestrator.cache.get(orchestrator_resource("Deployment"), name)["metadata"]["annotations"][
                naming.REVISION_ANNOTATION
            ]
            == "2"
        ),
    )
    narrower = bumped(wider, min_workers=1, max_workers=2)
    await orchestrator.apply(narrower)
    assert deployment_of(emulator, endpoint)["spec"]["replicas"] == 2


def orchestrator_resource(kind: str):  # type: ignore[no-untyped-def]
    from model_engine_server.orchestration.kubernetes.client import BY_KIND

    return BY_KIND[kind]


async def test_min_workers_zero_with_keda_scales_to_zero_and_switches_autoscalers(
    emulator: KubeEmulator, make_orchestrator: OrchestratorFactory
) -> None:
    orchestrator = await make_orchestrator(kubernetes_keda_enabled=True)
    endpoint = await applied(orchestrator, min_workers=1, max_workers=3)
    name = naming.resource_name(endpoint)
    assert emulator.get("autoscaling", "horizontalpodautoscalers", NAMESPACE, name) is not None

    to_zero = bumped(endpoint, min_workers=0)
    await orchestrator.apply(to_zero)
    assert emulator.get("autoscaling", "horizontalpodautoscalers", NAMESPACE, name) is None
    scaled = emulator.get("keda.sh", "scaledobjects", NAMESPACE, name)
    assert scaled is not None and scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["maxReplicaCount"] == 3
    assert scaled["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    emulator.patch("apps", "deployments", NAMESPACE, name, {"spec": {"replicas": 0}})  # KEDA scaled it to zero
    roll_out(emulator, to_zero)
    state = await observe_until(orchestrator, to_zero, lambda s: s.status == EndpointStatus.READY)
    assert state.available_workers == 0 and "scaled to zero" in (state.reason or "")

    back = bumped(to_zero, min_workers=1)
    await orchestrator.apply(back)
    assert emulator.get("keda.sh", "scaledobjects", NAMESPACE, name) is None
    assert emulator.get("autoscaling", "horizontalpodautoscalers", NAMESPACE, name) is not None
    assert deployment_of(emulator, endpoint)["spec"]["replicas"] == 1


async def test_min_workers_zero_without_keda_keeps_one_worker(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator, min_workers=0, max_workers=2)
    name = naming.resource_name(endpoint)
    assert deployment_of(emulator, endpoint)["spec"]["replicas"] == 1
    hpa = emulator.get("autoscaling", "horizontalpodautoscalers", NAMESPACE, name)
    assert hpa is not None and hpa["spec"]["minReplicas"] == 1
    assert emulator.list("keda.sh", "scaledobjects", NAMESPACE) == []


async def test_delete_removes_everything_and_is_idempotent(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    keep = make_endpoint("other")
    endpoint = make_endpoint()
    await orchestrator.apply(keep)
    await orchestrator.apply(endpoint)
    add_pod(emulator, endpoint, "a", {"phase": "Running"})

    await orchestrator.delete(endpoint)
    for group, plural in [*KINDS, ("", "pods")]:
        assert [o["metadata"]["name"] for o in emulator.list(group, plural, NAMESPACE)] == (
            [] if plural == "pods" else [naming.resource_name(keep)]
        ), plural
    await orchestrator.delete(endpoint)  # already gone: fine
    state = await observe_until(orchestrator, endpoint, lambda s: s.missing)
    assert "does not exist" in (state.reason or "")


async def test_cascade_deletes_children_when_only_the_deployment_is_removed(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = await applied(orchestrator)
    emulator.remove("apps", "deployments", NAMESPACE, naming.resource_name(endpoint))
    for group, plural in KINDS:
        assert emulator.list(group, plural, NAMESPACE) == [], plural


async def test_vanished_or_hand_edited_resources_are_reported_missing_and_restored(
    emulator: KubeEmulator, orchestrator: KubernetesOrchestrator
) -> None:
    endpoint = make_endpoint()
    name = naming.resource_name(endpoint)
    await orchestrator.apply(endpoint)

    emulator.remove("", "services", NAMESPACE, name)
    state = await observe_until(orchestrator, endpoint, lambda s: s.missing)
    assert state.reason == f"Service {name} is missing; re-applying"
    await orchestrator.apply(endpoint)  # what the reconciler does on missing=True
    assert emulator.get("", "services", NAMESPACE, name) is not None
    await observe_until(orchestrator, endpoint, lambda s: not s.missing)

    emulator.patch(
        "apps",
        "deployments",
        NAMESPACE,
        name,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                **deployment_of(emulator, endpoint)["spec"]["template"]["spec"]["containers"][0],
                                "image": "evil:1",
                            }
                        ]
                    }
                }
            }
        },
    )
    state = await observe_until(orchestrator, endpoint, lambda s: s.missing)
    assert "changed outside LLM Engine" in (state.reason or "")
    await orchestrator.apply(endpoint)
    assert deployment_of(emulator, endpoint)["spec"]["template"]["spec"]["containers"][0]["image"] != "evil:1"

    emulator.remove("apps", "deployments", NAMESPACE, name)
    # The cascade deletes the Service too, and its watch event may arrive first; once the Deployment's has arrived
    # the reason names the root cause.
    state = await observe_until(orchestrator, endpoint, lambda s: s.missing and "does not exist" in (s.reason or ""))
    assert state.missing
    await orchestrator.apply(endpoint)
    await observe_until(orchestrator, endpoint, lambda s: not s.missing)
