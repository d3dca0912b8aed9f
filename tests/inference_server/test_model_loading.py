"""Resolving ``--model-id``: zoo names, GGUF files and checkpoint directories; bad models fail clearly and early."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from model_engine_server.config import Settings
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.inference.model_loading import (
    CONVERSION_MARKER,
    ModelLoadError,
    bundled_gguf_path,
    is_complete_checkpoint,
    resolve_model,
)
from model_engine_server.testing.platform import builtin_server_command


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


@pytest.mark.model
def test_converted_checkpoint_is_standard_and_generates_like_the_gguf_source() -> None:
    """Plain transformers loads the checkpoint with no missing weight and answers greedily exactly as the GGUF did."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = resolve_model("smollm2-135m", Settings().models_dir)
    config = json.loads((checkpoint / "config.json").read_text())
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # tied: engines read the embedding
    assert "quantization_config" not in config
    assert json.loads((checkpoint / "generation_config.json").read_text())["eos_token_id"] == 2

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    loaded: Any = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32, output_loading_info=True)
    plain, info = loaded
    assert not info["missing_keys"] and not info["unexpected_keys"]
    entry = ModelZoo().get("smollm2-135m")
    assert entry is not None and entry.bundled_gguf is not None
    gguf = bundled_gguf_path(entry.bundled_gguf.package, entry.bundled_gguf.filename)
    source: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    greedy = {"max_new_tokens": 24, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    ours = plain.generate(**prompt, **greedy)[0].tolist()
    theirs = source.generate(**prompt, **greedy)[0].tolist()

    assert ours == theirs
    assert "Paris" in tokenizer.decode(ours[prompt["input_ids"].shape[1] :])  # the chat template was applied
