"""Fine-tuning the bundled model on this machine: time and memory for one epoch, and time to serve the result.

    python -m benchmarks.fine_tune [--examples 200] [--batch-size 8]

Measured in one run, each against a baseline from the same run:

- training: one LoRA epoch over ``--examples`` prompt/response pairs (``LoraTrainer``, as a fine-tune job runs it),
  against a forward-only pass over the same batches (what inference over the data costs);
- peak memory (VmHWM of this process) after training, against the peak after loading the model and the baseline;
- serving: from starting the built-in server on the merged checkpoint to its first streamed token, against the same
  for the base checkpoint (the price of deploying a fine-tune instead of the zoo model).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support import ROOT, stop_process
from model_engine_server.domain.fine_tuning import Hyperparameters, TrainingExample
from model_engine_server.inference.model_loading import resolve_model
from model_engine_server.orchestration.local.processes import free_port

CACHE = ROOT / ".llm-engine" / "test-model-cache"
TOPICS = ["the moon", "tea", "rivers", "chess", "bread", "owls", "trains", "glass", "maps", "bees"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def examples(count: int) -> list[TrainingExample]:
    rng = random.Random(0)
    rows = []
    for row in range(count):
        topic = rng.choice(TOPICS)
        prompt = f"Write one short fact about {topic} (example {row})."
        rows.append(TrainingExample(prompt, f"Here is a fact about {topic}: it is number {row} in this list.", row + 2))
    return rows


class _Quiet:
    def __init__(self) -> None:
        self.steps = 0

    def event(self, level: str, message: str) -> None:
        pass

    def progress(self, step: int, total: int) -> None:
        self.steps = step
        if step % 5 == 0 or step == total:
            log(f"training step {step}/{total}")

    def checkpoint(self, state_file: Path) -> None:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def forward_only_seconds(base: Path, data: list[TrainingExample], params: Hyperparameters) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model_engine_server.training.lora import collate, encode

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    encoded = [encode(tokenizer, example, params.max_length) for example in data]
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(encoded), params.batch_size):
            ids, labels, mask = collate(encoded[start : start + params.batch_size], 0, torch.device("cpu"))
            model(input_ids=ids, attention_mask=mask, labels=labels)
    return time.perf_counter() - started


def train_seconds(base: Path, data: list[TrainingExample], params: Hyperparameters, out: Path) -> tuple[float, Path]:
    from model_engine_server.training.lora import LoraTrainer

    started = time.perf_counter()
    result = LoraTrainer(base, out, params, _Quiet()).run(data)
    return time.perf_counter() - started, result.merged_dir


def time_to_first_token(checkpoint: Path) -> float:
    """Start the built-in server on ``checkpoint``; seconds until its first streamed token arrives."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "model_engine_server.inference.server",
        "--model-id",
        str(checkpoint),
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the server on {checkpoint} exited with {process.returncode}")
            try:
                body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
                with httpx.stream("POST", f"{url}/generate_stream", json=body, timeout=60) as response:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            return time.perf_counter() - started
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    base = resolve_model("smollm2-135m", CACHE)
    data = examples(args.examples)
    params = Hyperparameters(epochs=1, batch_size=args.batch_size, max_length=128)
    log(f"baseline: forward-only pass over {len(data)} examples")
    baseline = forward_only_seconds(base, data, params)
    baseline_peak = peak_rss_mb()
    log(f"training: one LoRA epoch ({math.ceil(len(data) / params.batch_size)} steps)")
    with tempfile.TemporaryDirectory() as scratch:
        trained, merged = train_seconds(base, data, params, Path(scratch))
        training_peak = peak_rss_mb()
        log("serving: time to first token, base then fine-tuned checkpoint")
        base_ttft = time_to_first_token(base)
        tuned_ttft = time_to_first_token(merged)
    report: dict[str, Any] = {
        "examples": len(data),
        "batch_size": params.batch_size,
        "train_seconds": round(trained, 1),
        "forward_only_seconds": round(baseline, 1),
        "train_vs_forward": round(trained / baseline, 2),
        "peak_rss_mb_training": round(training_peak),
        "peak_rss_mb_inference": round(baseline_peak),
        "first_token_seconds_fine_tuned": round(tuned_ttft, 1),
        "first_token_seconds_base": round(base_ttft, 1),
        "fine_tuned_vs_base_first_token": round(tuned_ttft / base_ttft, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
