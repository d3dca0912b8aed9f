"""One local vLLM replica: resolve the model to a checkpoint directory, then become vLLM's OpenAI server.

vLLM reads Hugging Face checkpoint directories, not our model-zoo names or GGUF files, so the model is resolved
(converted once, with progress in the replica's log) by this project's interpreter first. The process then
``exec``s the managed vLLM venv's interpreter, keeping its pid and process group: the orchestrator supervises,
health-checks (``GET /health``) and stops vLLM exactly like the built-in server.

    python -m model_engine_server.inference.vllm_replica --python VENV/bin/python --model-id smollm2-135m \\
        --port 8000 --hostname 127.0.0.1 [--served-model-name NAME] [--max-model-len 2048] [-- vLLM arguments]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from model_engine_server.config import Settings
from model_engine_server.inference.model_loading import ModelLoadError, resolve_model

logger = logging.getLogger("model_engine_server.inference.vllm_replica")

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def vllm_argv(python: str, checkpoint: str, name: str, args: argparse.Namespace) -> list[str]:
    argv = [python, "-m", VLLM_SERVER_MODULE, "--model", checkpoint, "--served-model-name", name]
    argv += ["--host", args.hostname, "--port", str(args.port)]
    # vLLM's CPU backend computes in float32 or bfloat16; float32 matches what the built-in server and transformers
    # produce, so greedy outputs agree across engines.
    argv += ["--dtype", args.dtype]
    if args.max_model_len:
        argv += ["--max-model-len", str(args.max_model_len)]
    return [*argv, *args.extra]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="the managed vLLM venv's interpreter")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--served-model-name", default=None, help="the model name clients send (default: model id)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hostname", default="127.0.0.1")
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("extra", nargs="*", help="passed on to vLLM unchanged")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        checkpoint = resolve_model(args.model_id, settings.models_dir, settings.model_zoo())
    except ModelLoadError as error:
        logger.error("cannot start vLLM: %s", error)
        return 1
    command = vllm_argv(args.python, str(checkpoint), args.served_model_name or args.model_id, args)
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.vllm_cpu_kv_cache_gib))
    # This project's PYTHONPATH (a source checkout ahead of its venv) must not leak into vLLM's interpreter.
    env.pop("PYTHONPATH", None)
    logger.info("Starting vLLM: %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(args.python, command, env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    raise SystemExit(main())
