"""Fine-tune, then serve, on this machine: the bundled model trained on 200 examples, then deployed.

    python -m benchmarks.fine_tune [--examples 200] [--batch-size 8]

Everything a user does, through ``model-engine serve`` (gateway, reconciler, local job runner) on a private port and
data directory, measured in one run against baselines from the same run:

- training: ``FineTune.create`` (one epoch over ``--examples`` prompt/response pairs) to SUCCESS as the job's owner
  sees it, and the trainer's peak memory (VmHWM of the worker process, sampled while it runs); baselines: a
  forward-only pass over the same batches in this process (what inference over the data costs) and its peak memory;
- serving: from seeing SUCCESS to the first streamed token of the fine-tuned model deployed with ``Model.create``
  (min_workers 1); baseline: the same for the base zoo model, deployed right after it.

Results: ``benchmarks/results/fine_tune.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cold_start import create, first_token_seconds, platform, wait_for
from benchmarks.support import ROOT
from model_engine_server.config import Settings
from model_engine_server.domain.fine_tuning import Hyperparameters, TrainingExample, parse_training_csv
from model_engine_server.inference.model_loading import resolve_model

RESULTS = ROOT / "benchmarks" / "results" / "fine_tune.json"
TOPICS = ["the moon", "tea", "rivers", "chess", "bread", "owls", "trains", "glass", "maps", "bees"]
FINISHED = ("SUCCESS", "FAILURE", "CANCELLED")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def training_csv(count: int) -> bytes:
    rng = random.Random(0)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["prompt", "response"])
    for row in range(count):
        topic = rng.choice(TOPICS)
        writer.writerow(
            [
                f"Write one short fact about {topic} (example {row}).",
                f"Here is a fact about {topic}: it is number {row} in this list.",
            ]
        )
    return out.getvalue().encode()


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (the process's peak resident memory so far) in MB; NaN once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in status.splitlines():
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


def fine_tune(client: httpx.Client, data_dir: Path, body: bytes, params: dict[str, Any]) -> dict[str, Any]:
    """Upload, create, follow to SUCCESS; wall time as the owner sees it and the worker's peak memory."""
    file_id = client.post("/v1/files", files={"file": ("train.csv", body)}).raise_for_status().json()["id"]
    started = time.perf_counter()
    request = {"model": "smollm2-135m", "training_file": file_id, "hyperparameters": params, "suffix": "bench"}
    job_id = client.post("/v1/llm/fine-tunes", json=request).raise_for_status().json()["id"]
    peak, shown = 0.0, ""
    pid_file = data_dir / "jobs" / job_id / "worker-0.pid"
    while (job := client.get(f"/v1/llm/fine-tunes/{job_id}").json())["status"] not in FINISHED:
        if pid_file.exists():
            sampled = peak_rss_mb(json.loads(pid_file.read_text())["pid"])
            peak = max(peak, 0.0 if math.isnan(sampled) else sampled)
        if job.get("progress") and job["progress"] != shown:
            shown = job["progress"]
            log(f"training step {shown}")
        time.sleep(0.2)
    success_at = time.perf_counter()
    events = client.get(f"/v1/llm/fine-tunes/{job_id}/events").json()["events"]
    if job["status"] != "SUCCESS":
        raise SystemExit(f"the fine-tune ended {job['status']}: {job.get('status_reason')}\n{events}")
    losses = [float(e["message"].rsplit(" ", 1)[1]) for e in events if e["message"].startswith("step ")]
    return {
        "job": job,
        "wall_seconds": success_at - started,
        "success_at": success_at,
        "worker_peak_rss_mb": peak,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def deploy_to_first_token(client: httpx.Client, name: str, model: str, since: float) -> float:
    """``Model.create`` then a streamed request: seconds from ``since`` to its first token."""
    create(client, name, model_name=model, min_workers=1, max_workers=1)
    wait_for(client, name, "ready", lambda available, _u, _r: available >= 1)
    sent = time.perf_counter()
    first, _ = first_token_seconds(client, name)
    return sent - since + first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    models = Settings().models_dir
    base = resolve_model("smollm2-135m", models)
    body = training_csv(args.examples)
    params = Hyperparameters(epochs=1, batch_size=args.batch_size, max_length=128)
    log(f"baseline: forward-only pass over {args.examples} examples in this process")
    forward = forward_only_seconds(base, parse_training_csv(body.decode()), params)
    forward_peak = peak_rss_mb()
    hyperparameters = {"epochs": 1, "batch_size": params.batch_size, "max_length": params.max_length}
    with tempfile.TemporaryDirectory(prefix="fine-tune-bench-") as tmp:
        data_dir = Path(tmp)
        with platform(data_dir, model_cache_dir=str(models)) as client:
            log(
                f"fine-tune: {args.examples} examples, one epoch ({math.ceil(args.examples / params.batch_size)} steps)"
            )
            trained = fine_tune(client, data_dir, body, hyperparameters)
            log("serving: SUCCESS to the first token of the deployed fine-tune, then of the base model")
            tuned = deploy_to_first_token(client, "bench-ft", trained["job"]["fine_tuned_model"], trained["success_at"])
            base_first = deploy_to_first_token(client, "bench-base", "smollm2-135m", time.perf_counter())
    report: dict[str, Any] = {
        "examples": args.examples,
        "batch_size": params.batch_size,
        "steps": math.ceil(args.examples / params.batch_size),
        "fine_tune_wall_seconds": round(trained["wall_seconds"], 1),
        "forward_only_seconds": round(forward, 1),
        "fine_tune_vs_forward": round(trained["wall_seconds"] / forward, 2),
        "train_loss_first_last": [trained["first_loss"], trained["last_loss"]],
        "peak_rss_mb_trainer": round(trained["worker_peak_rss_mb"]),
        "peak_rss_mb_forward_only": round(forward_peak),
        "success_to_first_token_seconds": round(tuned, 1),
        "base_deploy_to_first_token_seconds": round(base_first, 1),
        "fine_tuned_vs_base_first_token": round(tuned / base_first, 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
