"""What `make images` produces: labelled, non-root, no HEALTHCHECK, the application only, CPU torch."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
import yaml

from tests.containers.conftest import Images
from tests.containers.podman import REPO_ROOT, chart_user

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(3600)]

PROJECT_VERSION = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_images_carry_version_source_and_revision_labels(images: Images) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    app_version = yaml.safe_load((REPO_ROOT / "charts" / "model-engine" / "Chart.yaml").read_text())["appVersion"]

    for image in (images.control_plane, images.engine):
        labels = images.podman.inspect(image)["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == PROJECT_VERSION == app_version
        assert labels["org.opencontainers.image.revision"] == head.stdout.strip()
        assert labels["org.opencontainers.image.source"].startswith("https://")


def test_images_run_as_the_charts_non_root_user_and_leave_health_to_the_probes(images: Images) -> None:
    for image in (images.control_plane, images.engine):
        config = images.podman.inspect(image)["Config"]
        assert config["User"] == chart_user()
        assert config["Entrypoint"] == ["model-engine"]
        assert not config.get("Healthcheck"), "the chart's probes check health; a HEALTHCHECK would be ignored"


def test_image_holds_the_application_and_no_repository_state(images: Images) -> None:
    listing = images.podman.once(images.control_plane, "ls", "-A", "/app", options=["--entrypoint="])

    assert listing.returncode == 0, listing.stderr
    assert {"alembic.ini", "migrations", "model_engine_server", "pyproject.toml"} <= set(listing.stdout.split())
    assert not {".git", ".venv", "tests", "charts", "docs", "clients"} & set(listing.stdout.split())


def test_torch_in_the_image_is_the_cpu_build(images: Images) -> None:
    probe = images.podman.once(
        images.control_plane, "python", "-c", "import torch; print(torch.__version__)", options=["--entrypoint="]
    )

    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().endswith("+cpu")
