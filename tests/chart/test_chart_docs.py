"""docs/chart-values.md describes every chart value and setting; docs/kubernetes.md matches what the chart does."""

from __future__ import annotations

import re
from collections.abc import Callable

import yaml

from tests.chart.conftest import CHART_DIR, CI_VALUES_FILES, Rendered, container, env_of, full_name
from tests.chart.helm_tool import REPO_ROOT

VALUES_DOC = REPO_ROOT / "docs" / "chart-values.md"
GUIDE = REPO_ROOT / "docs" / "kubernetes.md"
# Values that hold a Kubernetes structure (or a free map) are documented as a whole.
DOCUMENTED_AS_A_WHOLE = {"resources", "podSecurityContext", "securityContext", "latestTags"}


def _value_paths(values: object, prefix: tuple[str, ...] = ()) -> set[str]:
    if isinstance(values, dict) and values and (not prefix or prefix[-1] not in DOCUMENTED_AS_A_WHOLE):
        return {p for key, value in values.items() for p in _value_paths(value, (*prefix, str(key)))}
    return {".".join(prefix)}


def _documented_paths() -> set[str]:
    """Value paths named in the first column of the doc's tables; `a.b.c` / `.d` means a.b.c and a.b.d."""
    paths: set[str] = set()
    for line in VALUES_DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        previous = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            path = previous.rsplit(".", 1)[0] + token if token.startswith(".") else token
            paths.add(path)
            previous = path
    return paths


def test_every_value_is_documented_and_every_documented_value_exists() -> None:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    values = _value_paths(defaults)
    documented = _documented_paths()

    assert values - documented == set(), "add these values to docs/chart-values.md"
    assert documented - values == set(), "docs/chart-values.md names values the chart does not have"


def test_every_setting_the_chart_sets_is_named_in_the_reference(render: Callable[..., Rendered]) -> None:
    doc = VALUES_DOC.read_text()
    names = {
        name
        for values in CI_VALUES_FILES
        for name in env_of(container(render(values).get("Deployment", full_name("gateway")), "gateway"))
        if name.startswith("LLM_ENGINE_")
    }

    assert {n for n in names if f"`{n}`" not in doc} == set()


def test_guide_uses_the_names_the_chart_renders(render: Callable[..., Rendered]) -> None:
    """The guide's commands use release `llm` in namespace `llm-engine`, as the tests render it."""
    guide = GUIDE.read_text()
    rendered = render(CI_VALUES_FILES[0])

    for kind, name in [
        ("Service", full_name("gateway")),
        ("Deployment", full_name("gateway")),
        ("Deployment", full_name("orchestrator")),
        ("Job", full_name("migrate")),
        ("Secret", full_name("bootstrap-key")),
    ]:
        rendered.get(kind, name)
        assert name in guide, name
    for section in ("Prerequisites", "Install", "first key", "Register an endpoint", "Call it", "Upgrade", "Uninstall"):
        assert re.search(rf"^##+ .*{section}", guide, re.MULTILINE), section
    for tool in ("GPU operator", "KEDA", "Prometheus"):
        assert tool in guide
