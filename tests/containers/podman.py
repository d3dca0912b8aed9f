"""Running the images built by ``make images`` with podman, as the Helm chart runs them on a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_VALUES = REPO_ROOT / "charts" / "model-engine" / "values.yaml"
CONTAINERS_CONF = REPO_ROOT / "build" / "images" / "containers.conf"  # written by `make images`

# The writable paths the chart mounts as emptyDirs over the read-only root filesystem (templates/_helpers.tpl).
DATA_DIR = "/var/lib/llm-engine"  # LLM_ENGINE_DATA_DIR in the images
CHART_SCRATCH_MOUNTS = ("/tmp", DATA_DIR)


def image_refs() -> list[str]:
    """What `make images` tags, as the Makefile says: the control-plane image, then the engine image."""
    output = subprocess.run(
        ["make", "--no-print-directory", "-s", "image-refs"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return output.stdout.split()


def chart_user() -> str:
    """``uid:gid`` from the chart's podSecurityContext."""
    context = yaml.safe_load(CHART_VALUES.read_text())["podSecurityContext"]
    return f"{context['runAsUser']}:{context['runAsGroup']}"


def chart_security_options(data_dir: Path | None = None) -> list[str]:
    """podman flags for the chart's pod and container securityContext: non-root, read-only root, no capabilities.

    ``data_dir``: a host directory (owned by the chart's user) mounted as the data directory instead of the pod's own
    scratch space, for containers that share it (the local orchestrator's replica state file).
    """
    options = ["--user", chart_user(), "--read-only", "--read-only-tmpfs=false"]
    options += ["--cap-drop=all", "--security-opt=no-new-privileges"]
    for path in CHART_SCRATCH_MOUNTS:  # U=true: owned by the container's user, as fsGroup makes emptyDirs writable
        if path == DATA_DIR and data_dir is not None:
            options += ["--volume", f"{data_dir}:{path}"]
        else:
            options += ["--mount", f"type=tmpfs,destination={path},U=true"]
    return options


@dataclass(frozen=True)
class Podman:
    """The podman command with the project's containers.conf (runc, cgroupfs, the host's ulimits)."""

    env: dict[str, str]

    @classmethod
    def configured(cls) -> Podman:
        return cls({**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def inspect(self, image: str) -> dict[str, Any]:
        inspected: list[dict[str, Any]] = json.loads(self.run("image", "inspect", image).stdout)
        return inspected[0]

    def once(self, image: str, *command: str, options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in a throw-away container under the chart's security settings."""
        return self.run("run", "--rm", *chart_security_options(), *options, image, *command, check=False)

    @contextmanager
    def container(
        self, image: str, *command: str, options: Sequence[str] = (), data_dir: Path | None = None
    ) -> Iterator[Container]:
        """A detached container on the host network (reaching PostgreSQL and Redis on the host), removed afterwards.
        ``data_dir``: see ``chart_security_options``."""
        name = f"llm-engine-test-{uuid.uuid4().hex[:8]}"
        flags = ["--detach", "--name", name, "--network=host", *chart_security_options(data_dir), *options]
        self.run("run", *flags, image, *command)
        try:
            yield Container(self, name)
        finally:
            self.run("rm", "--force", "--time", "5", name, check=False, timeout=60)


@dataclass(frozen=True)
class Container:
    podman: Podman
    name: str

    def logs(self) -> str:
        result = self.podman.run("logs", self.name, check=False)
        return result.stdout + result.stderr

    def running(self) -> bool:
        result = self.podman.run("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail with the container's logs if it stops or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not condition():
            if not self.running():
                raise AssertionError(f"the container stopped before {what}:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.logs()[-4000:]}")
            time.sleep(0.5)
