"""The inference engines an endpoint's pod can run on Kubernetes: image, command and arguments of each, and which
one an endpoint gets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointConfig, InferenceFramework

CONTAINER_PORT = 8080
MODEL_DIR = "/models"
CHECKPOINT_DIR = f"{MODEL_DIR}/checkpoint"


class EngineKind(StrEnum):
    TGI = "text_generation_inference"
    VLLM = "vllm"
    BUILTIN = "builtin"


@dataclass(frozen=True)
class EngineWeights:
    """Where the engine reads weights from: a hub repo id, or the local directory a checkpoint is placed in."""

    model_id: str  # hub repository, or CHECKPOINT_DIR when a checkpoint is placed in the pod
    served_name: str  # the endpoint's model_name (a zoo name unless a checkpoint is given)
    context_length: int
    max_input_tokens: int


class TgiEngine:
    """``text-generation-launcher`` from the TGI image (TGI protocol)."""

    def image(self, config: EndpointConfig, settings: Settings) -> str:
        return f"{settings.tgi_image_repository}:{_resolve_tag(config, settings)}"

    def command(self) -> list[str]:
        return ["text-generation-launcher"]

    def args(self, config: EndpointConfig, source: EngineWeights) -> list[str]:
        return [
            *_launcher_args(source.model_id, source),
            "--num-shard",
            str(config.num_shards),
            *_optional("--quantize", config.quantize),
        ]


class VllmEngine:
    """vLLM's OpenAI-compatible server from the vllm-openai image."""

    def image(self, config: EndpointConfig, settings: Settings) -> str:
        return f"{settings.vllm_image_repository}:{_resolve_tag(config, settings)}"

    def command(self) -> list[str]:
        return ["python3", "-m", "vllm.entrypoints.openai.api_server"]

    def args(self, config: EndpointConfig, source: EngineWeights) -> list[str]:
        return [
            "--model",
            source.model_id,
            "--served-model-name",
            source.served_name,
            "--tensor-parallel-size",
            str(config.num_shards),
            "--max-model-len",
            str(source.context_length),
            *_listen("--host"),
            *_optional("--quantization", config.quantize),
        ]


class BuiltinEngine:
    """``model-engine inference-server``: TGI protocol plus OpenAI routes, so it stands in for either engine."""

    def image(self, config: EndpointConfig, settings: Settings) -> str:  # noqa: ARG002 - one image for all
        return f"{settings.builtin_image_repository}:{settings.builtin_image_tag}"

    def command(self) -> list[str]:
        return ["model-engine", "inference-server"]

    def args(self, config: EndpointConfig, source: EngineWeights) -> list[str]:  # noqa: ARG002 - no sharding flags
        # The built-in server resolves zoo names itself (incl. GGUF files bundled in its image).
        model_id = source.model_id if source.model_id == CHECKPOINT_DIR else source.served_name
        return _launcher_args(model_id, source)


ENGINES: dict[EngineKind, TgiEngine | VllmEngine | BuiltinEngine] = {
    EngineKind.TGI: TgiEngine(),
    EngineKind.VLLM: VllmEngine(),
    EngineKind.BUILTIN: BuiltinEngine(),
}


def select_engine(config: EndpointConfig, settings: Settings) -> EngineKind:
    if config.gpus == 0 and settings.kubernetes_builtin_engine_without_gpus:
        return EngineKind.BUILTIN
    if config.inference_framework == InferenceFramework.VLLM:
        return EngineKind.VLLM
    return EngineKind.TGI


def _launcher_args(model_id: str, source: EngineWeights) -> list[str]:
    """The flags of TGI's launcher that the built-in server accepts too: weights, token limits, where to listen."""
    return [
        "--model-id",
        model_id,
        "--max-input-tokens",
        str(source.max_input_tokens),
        "--max-total-tokens",
        str(source.context_length),
        *_listen("--hostname"),
    ]


def _listen(host_flag: str) -> list[str]:
    # Every interface of the pod: the Service and the kubelet's probes reach the container on its pod IP.
    return [host_flag, "0.0.0.0", "--port", str(CONTAINER_PORT)]


def _optional(flag: str, value: str | None) -> list[str]:
    return [flag, value] if value else []


def _resolve_tag(config: EndpointConfig, settings: Settings) -> str:
    tag = config.inference_framework_image_tag
    if tag == "latest":
        tag = settings.latest_image_tags.get(config.inference_framework.value, tag)
    return tag
