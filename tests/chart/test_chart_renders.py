"""`helm lint --strict` and `helm template` for every CI values file; every object must be valid Kubernetes."""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from model_engine_server.config import Settings
from tests.chart.conftest import CHART_DIR, CI_VALUES_FILES, Helm, Obj, Rendered, ci_values, full_name
from tests.chart.helm_tool import REPO_ROOT

# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources have no schema in kubernetes-validate; test_service_monitor checks their shape.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

ci_files = pytest.mark.parametrize("values", CI_VALUES_FILES, ids=lambda p: p.stem)


def test_chart_version_follows_the_package() -> None:
    """The default image tags (control plane and built-in server) are the chart's appVersion: the package version."""
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    package = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert chart["appVersion"] == chart["version"] == package
    assert Settings.model_fields["builtin_image_tag"].default == package


def test_there_is_a_values_file_per_documented_scenario() -> None:
    assert {p.stem for p in CI_VALUES_FILES} >= {
        "default-values",
        "external-databases-values",
        "gpu-values",
        "cpu-only-values",
    }


@ci_files
def test_lint_strict_passes(helm: Helm, values: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(values))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@ci_files
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(render: Callable[..., Rendered], values: Path, version: str) -> None:
    rendered = render(values)
    problems = []
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")

    assert problems == []
    assert len(rendered.objects) >= 10  # the whole chart rendered, not an empty or truncated stream


@ci_files
def test_object_names_are_unique_and_namespaced(render: Callable[..., Rendered], values: Path) -> None:
    rendered = render(values)
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered.objects]

    assert len(keys) == len(set(keys))
    # Only the endpoint namespace itself is cluster-scoped; no ClusterRole, no CRD, no webhook.
    assert {kind for kind, namespace, _ in keys if namespace is None} <= {"Namespace"}


@ci_files
def test_services_select_pods_and_target_named_ports(render: Callable[..., Rendered], values: Path) -> None:
    rendered = render(values)
    for service in rendered.of_kind("Service"):
        selector = service["spec"]["selector"]
        backends = [
            w
            for w in rendered.workloads()
            if w["kind"] != "Job" and selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(backends) == 1, f"Service {service['metadata']['name']} selects {len(backends)} workloads"
        port_names = {p["name"] for c in backends[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_service_monitor_scrapes_the_gateway_metrics_port(render: Callable[..., Rendered]) -> None:
    rendered = render(ci_values("gpu"))
    (monitor,) = rendered.of_kind("ServiceMonitor")
    service = rendered.get("Service", full_name("gateway"))

    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "http" in {p["name"] for p in service["spec"]["ports"]}


def test_no_service_monitor_unless_asked(render: Callable[..., Rendered]) -> None:
    assert render(ci_values("default")).of_kind("ServiceMonitor") == []


def _render_notes(helm: Helm, tmp_path: Path, *values: Path) -> str:
    """NOTES.txt as `helm install` would print it.

    `helm install --dry-run` needs a cluster, so render a copy of the chart in which the notes are a named template
    placed in a ConfigMap.
    """
    chart = tmp_path / "model-engine"
    shutil.copytree(CHART_DIR, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "notes-probe.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ include "notes" . | quote }}\n'
    )
    args = ["template", "llm", str(chart), "--namespace", "llm-engine", "--show-only", "templates/notes-probe.yaml"]
    for path in values:
        args += ["--values", str(path)]
    result = helm.run(*args)
    assert result.returncode == 0, result.stderr
    text: str = yaml.safe_load(result.stdout)["data"]["notes"]
    return text


def test_notes_tell_how_to_reach_the_gateway_and_get_a_key(helm: Helm, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path)

    assert "kubectl port-forward -n llm-engine svc/llm-model-engine-gateway 5000:80" in notes
    assert "kubectl get secret -n llm-engine llm-model-engine-bootstrap-key" in notes
    assert (
        "kubectl exec -n llm-engine deploy/llm-model-engine-gateway -- model-engine keys create --owner TEAM" in notes
    )
    assert "helm uninstall` keeps it" in notes


def test_notes_follow_the_values(helm: Helm, tmp_path: Path) -> None:
    notes = _render_notes(helm, tmp_path, ci_values("external-databases"))

    assert 'in your Secret "llm-engine-bootstrap", key "key"' in notes
    assert "bootstrap-key" not in notes  # no generated key to read
    assert "quick-start PostgreSQL" not in notes


def _all_strings(obj: object) -> list[str]:
    if isinstance(obj, dict):
        return [s for value in obj.values() for s in _all_strings(value)]
    if isinstance(obj, list):
        return [s for value in obj for s in _all_strings(value)]
    return [obj] if isinstance(obj, str) else []


def _generated_secret_values(rendered: Rendered) -> list[str]:
    return [value for secret in rendered.of_kind("Secret") for value in secret.get("stringData", {}).values()]


@ci_files
def test_secret_values_appear_only_in_secrets(render: Callable[..., Rendered], values: Path) -> None:
    rendered = render(values)
    secrets = _generated_secret_values(rendered)
    others: list[Obj] = [o for o in rendered.objects if o["kind"] != "Secret"]
    leaked = {s for o in others for s in _all_strings(o) for secret in secrets if secret in s}

    assert leaked == set()


def test_long_release_names_still_give_valid_object_names(helm: Helm) -> None:
    objects = [o for o in yaml.safe_load_all(helm.run("template", "r" * 53, str(CHART_DIR)).stdout) if o is not None]

    assert objects
    assert max(len(o["metadata"]["name"]) for o in objects) <= 63
    # A StatefulSet's pods get a controller-revision-hash label of "<name>-<10 characters>", itself at most 63.
    assert max(len(o["metadata"]["name"]) for o in objects if o["kind"] == "StatefulSet") <= 52
