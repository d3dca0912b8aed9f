"""Resolving ``--model-id``: zoo names, GGUF files and checkpoint directories; bad models fail clearly and early."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from model_engine_server.config import Settings
from model_engine_server.inference.model_loading import (
    CONVERSION_MARKER,
    ModelLoadError,
    is_complete_checkpoint,
    resolve_model,
)
from testkit.platform import builtin_server_command


def test_unknown_model_id_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        resolve_model("no-such-model", tmp_path)


def test_zoo_model_without_bundled_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no bundled weights"):
        resolve_model("llama-3-8b-instruct", tmp_path)


def test_directory_without_config_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_model(str(tmp_path), tmp_path / "cache")


def test_corrupt_gguf_fails_without_leaving_a_cache_entry(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    cache = tmp_path / "cache"

    with pytest.raises(ModelLoadError, match="Could not convert"):
        resolve_model(str(bad), cache)

    assert list(cache.iterdir()) == []  # neither a partial checkpoint nor a staging directory survives


@pytest.mark.model
def test_bundled_model_is_converted_once_then_reused() -> None:
    cache = Settings().models_dir
    first = resolve_model("smollm2-135m", cache)  # converts on a fresh machine, else reuses
    converted_at = (first / CONVERSION_MARKER).stat().st_mtime_ns

    again = resolve_model("smollm2-135m", cache)

    assert again == first and is_complete_checkpoint(first)
    assert (first / "model.safetensors").stat().st_size > 100_000_000
    assert (first / CONVERSION_MARKER).stat().st_mtime_ns == converted_at  # reused, not converted again


@pytest.mark.parametrize("model_id", ["/nonexistent/model", "broken.gguf"])
def test_server_exits_non_zero_before_listening_on_a_bad_model(tmp_path: Path, model_id: str) -> None:
    if model_id.endswith(".gguf"):
        (tmp_path / model_id).write_bytes(b"not a gguf file")
        model_id = str(tmp_path / model_id)
    command = builtin_server_command(model_id, 1, "--cache-dir", str(tmp_path / "cache"))

    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)

    assert result.returncode == 1
    assert "cannot start the inference server" in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout
