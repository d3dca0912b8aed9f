"""The container test group (marker ``containers``): ``make images`` once per run, then the images under test.

``make images`` installs podman (Debian packages) when it is missing and reuses the layer cache of the machine's image
store, so only the first run on a machine builds from scratch. Where podman cannot be installed (not root, or no
apt-get) the group is skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from tests.containers.podman import REPO_ROOT, Podman, image_refs

BUILD_TIMEOUT_SECONDS = 3600  # a first build on a new machine: the Debian base image, torch and the dependencies


@dataclass(frozen=True)
class Images:
    control_plane: str
    engine: str
    podman: Podman


@pytest.fixture(scope="session")
def images() -> Images:
    if shutil.which("podman") is None and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip("podman is not installed and cannot be installed here: `make images` needs root and apt-get")
    build = subprocess.run(
        ["make", "--no-print-directory", "images"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    assert build.returncode == 0, f"make images failed:\n{build.stdout[-2000:]}\n{build.stderr[-4000:]}"
    control_plane, engine = image_refs()
    return Images(control_plane, engine, Podman.configured())
