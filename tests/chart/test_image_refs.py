"""The chart installs exactly the images `make images` builds (and tests/containers runs)."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from model_engine_server.config import Settings
from tests.chart.conftest import CHART_DIR, Rendered, containers, env_of, full_name
from tests.containers.podman import image_refs

CONTROL_PLANE_WORKLOADS = ("gateway", "worker", "orchestrator", "migrate")


def _builtin_image(env: dict[str, dict[str, str]]) -> str:
    return f"{env['LLM_ENGINE_BUILTIN_IMAGE_REPOSITORY']['value']}:{env['LLM_ENGINE_BUILTIN_IMAGE_TAG']['value']}"


def test_default_chart_runs_the_control_plane_image_make_builds(render: Callable[..., Rendered]) -> None:
    control_plane, _ = image_refs()
    rendered = render()
    workloads = [w for w in rendered.workloads() if w["metadata"]["name"] in map(full_name, CONTROL_PLANE_WORKLOADS)]

    # The migration Job's init container waits with the quick-start PostgreSQL image's pg_isready.
    images = {c["image"] for w in workloads for c in containers(w) if c["name"] != "wait-for-postgresql"}

    assert len(workloads) == len(CONTROL_PLANE_WORKLOADS)
    assert images == {control_plane}


def test_default_chart_and_settings_name_the_engine_image_make_builds(render: Callable[..., Rendered]) -> None:
    _, engine = image_refs()
    gateway = render().get("Deployment", full_name("gateway"))
    builtin = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["inferenceImages"]["builtin"]
    defaults = Settings.model_fields

    assert _builtin_image(env_of(containers(gateway)[-1])) == engine
    assert f"{builtin['repository']}:{defaults['builtin_image_tag'].default}" == engine
    assert f"{defaults['builtin_image_repository'].default}:{defaults['builtin_image_tag'].default}" == engine
