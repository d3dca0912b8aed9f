"""values.schema.json rejects wrong values at install time, with a message that names the value."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from model_engine_server.config import ModelZooOverride
from model_engine_server.domain.rules import GPU_TYPES
from tests.chart.conftest import BROKEN_VALUES_DIR, CHART_DIR, CI_VALUES_FILES, Helm, deep_merge

BROKEN_VALUES_FILES = sorted(BROKEN_VALUES_DIR.glob("*.yaml"))
SCHEMA_FAILURE = "values don't meet the specifications of the schema"


def _expected_fragment(path: Path) -> str:
    """Each broken values file starts with `# expect: <text the error must contain>`."""
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first_line.removeprefix("# expect: ").strip()


def _schema() -> dict[str, object]:
    schema: dict[str, object] = json.loads((CHART_DIR / "values.schema.json").read_text())
    return schema


@pytest.mark.parametrize("values", BROKEN_VALUES_FILES, ids=lambda p: p.stem)
def test_broken_values_fail_the_schema(helm: Helm, values: Path) -> None:
    result = helm.run("template", "llm", str(CHART_DIR), "--values", str(values))

    assert result.returncode != 0
    assert SCHEMA_FAILURE in result.stderr
    assert _expected_fragment(values) in result.stderr


@pytest.mark.parametrize("values", BROKEN_VALUES_FILES[:1], ids=lambda p: p.stem)
def test_lint_strict_reports_broken_values(helm: Helm, values: Path) -> None:
    result = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(values))

    assert result.returncode != 0
    assert _expected_fragment(values) in result.stdout + result.stderr


def test_there_are_broken_values_files() -> None:
    assert len(BROKEN_VALUES_FILES) >= 10


def test_schema_is_valid_draft_7() -> None:
    jsonschema.Draft7Validator.check_schema(_schema())


@pytest.mark.parametrize("values", [CHART_DIR / "values.yaml", *CI_VALUES_FILES], ids=lambda p: p.stem)
def test_shipped_values_satisfy_the_schema_alone(values: Path) -> None:
    """The defaults and every CI file are valid on their own terms too (not only merged over the defaults)."""
    merged = deep_merge(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), yaml.safe_load(values.read_text()))

    jsonschema.Draft7Validator(_schema()).validate(merged)


def test_every_default_value_is_declared_in_the_schema() -> None:
    """With additionalProperties false everywhere, an undeclared default would make the chart reject itself."""
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    schema = _schema()
    undeclared = [path for path in _leaf_paths(defaults) if not _declared(schema, schema, path)]

    assert undeclared == []


def test_model_zoo_schema_matches_the_setting() -> None:
    """The chart's modelZoo entries are parsed by Settings.model_zoo_overrides: the same fields, the same required."""
    definitions = _schema()["properties"]
    assert isinstance(definitions, dict)
    entry = definitions["modelZoo"]["additionalProperties"]

    assert set(entry["properties"]) == set(ModelZooOverride.model_fields)
    assert set(entry["properties"]["gpu_type"]["enum"]) == {None, *GPU_TYPES}
    assert set(entry["required"]) == {n for n, f in ModelZooOverride.model_fields.items() if f.is_required()}


def _leaf_paths(values: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [p for key, value in values.items() for p in _leaf_paths(value, (*prefix, str(key)))]
    return [prefix]


def _declared(root: dict[str, object], node: object, path: tuple[str, ...]) -> bool:
    assert isinstance(node, dict)
    if "$ref" in node:
        ref = str(node["$ref"]).removeprefix("#/").split("/")
        target: object = root
        for part in ref:
            assert isinstance(target, dict)
            target = target[part]
        return _declared(root, target, path)
    if not path:
        return True
    properties = node.get("properties", {})
    assert isinstance(properties, dict)
    if path[0] in properties:
        return _declared(root, properties[path[0]], path[1:])
    return node.get("additionalProperties", True) is not False and node.get("type") == "object"
