"""The EndpointSlice controller, test side: what kube-controller-manager writes for each Service from its pods.

``sync_endpoint_slices`` does one pass over a namespace, as the controller does after any pod or Service change: one
slice per Service (``<service>-slice``; the real controller splits at 100 endpoints, which no test needs), labelled
with the Service's labels plus ``kubernetes.io/service-name``; one endpoint per pod that matches the Service's
selector and has an IP, ``ready`` when its Ready condition is true and it is not terminating. Slices of Services that
are gone are deleted. Unchanged slices are not rewritten (no spurious watch events).
"""

from __future__ import annotations

from typing import Any

from tests.kubernetes.emulator import KubeEmulator

Obj = dict[str, Any]
GROUP, PLURAL = "discovery.k8s.io", "endpointslices"
SERVICE_NAME = "kubernetes.io/service-name"


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _container_port(pod: Obj, name: str) -> int | None:
    for container in pod.get("spec", {}).get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def _endpoint(pod: Obj) -> Obj:
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    ready = _ready(pod) and not terminating
    return {
        "addresses": [pod["status"]["podIP"]],
        "conditions": {"ready": ready, "serving": _ready(pod), "terminating": terminating},
        "targetRef": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"]},
    }


def slice_for(service: Obj, pods: list[Obj]) -> Obj:
    selector = service["spec"].get("selector") or {}
    members = [
        p
        for p in pods
        if (p.get("status") or {}).get("podIP")
        and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
    ]
    ports = []
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        number = _container_port(members[0], target) if isinstance(target, str) and members else target
        ports.append({"name": port.get("name", ""), "port": number, "protocol": port.get("protocol", "TCP")})
    name = service["metadata"]["name"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-slice",
            "labels": {
                **(service["metadata"].get("labels") or {}),
                SERVICE_NAME: name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [_endpoint(p) for p in sorted(members, key=lambda p: p["metadata"]["name"])],
        "ports": ports if members else None,
    }


def sync_endpoint_slices(emulator: KubeEmulator, namespace: str) -> None:
    services = emulator.list("", "services", namespace)
    pods = emulator.list("", "pods", namespace)
    wanted = {f"{s['metadata']['name']}-slice": slice_for(s, pods) for s in services}
    for existing in emulator.list(GROUP, PLURAL, namespace):
        if existing["metadata"]["name"] not in wanted:
            emulator.remove(GROUP, PLURAL, namespace, existing["metadata"]["name"])
    for name, desired in wanted.items():
        current = emulator.get(GROUP, PLURAL, namespace, name)
        if current is None or any(current.get(k) != desired[k] for k in ("endpoints", "ports")):
            emulator.put(GROUP, PLURAL, namespace, desired)
