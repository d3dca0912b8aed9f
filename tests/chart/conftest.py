"""Fixtures for the Helm chart checks: the real helm binary (fetched once, see helm_tool.py) and rendered objects."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm_tool import REPO_ROOT, ensure_helm

CHART_DIR = REPO_ROOT / "charts" / "model-engine"
CI_VALUES_DIR = CHART_DIR / "ci"
BROKEN_VALUES_DIR = Path(__file__).parent / "values"
CI_VALUES_FILES = sorted(CI_VALUES_DIR.glob("*.yaml"))
RELEASE = "llm"
RELEASE_NAMESPACE = "llm-engine"
HELM_TIMEOUT_SECONDS = 120

Obj = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; carries its stderr so a failing test shows why."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        self.stderr = result.stderr


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS, check=False
        )

    def template_args(self, values: Sequence[Path], sets: Sequence[str]) -> list[str]:
        args = ["template", RELEASE, str(CHART_DIR), "--namespace", RELEASE_NAMESPACE]
        for path in values:
            args += ["--values", str(path)]
        for assignment in sets:
            args += ["--set", assignment]
        return args

    def template(self, values: Sequence[Path] = (), sets: Sequence[str] = ()) -> list[Obj]:
        args = self.template_args(values, sets)
        result = self.run(*args)
        if result.returncode != 0:
            raise HelmError(args, result)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    """The objects `helm template` produced for one set of values."""

    objects: list[Obj]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
        return matches[0]

    def workloads(self) -> Iterator[Obj]:
        """Every object that carries a pod template."""
        for obj in self.objects:
            if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
                yield obj


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Obj, name: str) -> Obj:
    matches = [c for c in containers(workload) if c["name"] == name]
    assert len(matches) == 1, f"no container {name} in {workload['metadata']['name']}"
    return matches[0]


def env_of(c: Obj) -> dict[str, Obj]:
    """A container's env entries by name; fails on duplicates, which Kubernetes would silently resolve."""
    entries = c.get("env", [])
    names = [e["name"] for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"container {c['name']} sets {duplicates} more than once"
    return {e["name"]: e for e in entries}


def full_name(component: str) -> str:
    return f"{RELEASE}-model-engine-{component}"


def hook_annotations(obj: Obj) -> tuple[set[str], int] | None:
    annotations = obj["metadata"].get("annotations") or {}
    if "helm.sh/hook" not in annotations:
        return None
    hooks = {h.strip() for h in annotations["helm.sh/hook"].split(",")}
    return hooks, int(annotations.get("helm.sh/hook-weight", "0"))


@pytest.fixture(scope="session")
def helm() -> Helm:
    return Helm(ensure_helm())


@pytest.fixture(scope="session")
def render(helm: Helm) -> Callable[..., Rendered]:
    """render(*values_files, sets=(...)) -> Rendered, cached for the session (rendering takes ~0.2 s each)."""

    @functools.cache
    def cached(values: tuple[Path, ...], sets: tuple[str, ...]) -> Rendered:
        return Rendered(helm.template(values, sets))

    def render_values(*values: Path, sets: Sequence[str] = ()) -> Rendered:
        return cached(tuple(values), tuple(sets))

    return render_values


def ci_values(name: str) -> Path:
    path = CI_VALUES_DIR / f"{name}-values.yaml"
    assert path.is_file(), path
    return path


def deep_merge(base: Obj, override: Obj | None) -> Obj:
    """Values merged as Helm merges a values file over the defaults (maps recursively, everything else replaced)."""
    merged = dict(base)
    for key, value in (override or {}).items():
        current = merged.get(key)
        merged[key] = deep_merge(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
    return merged
