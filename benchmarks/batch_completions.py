"""Batch completions: the same prompts through a batch job and one at a time through a live endpoint, in one run.

    .venv/bin/python -m benchmarks.batch_completions [--prompts 256] [--max-new-tokens 16]

One ``model-engine serve`` (its own data dir, a free port) with the demo endpoint (SmolLM2-135M on the built-in
server). First the baseline: every prompt sent to the READY endpoint with ``completions-sync``, one after another —
what a user's loop over a data set does. Then the same prompts as one v1 batch job (``data_parallelism`` 1): the job
loads the model itself and feeds every prompt to the engine's continuous-batching scheduler. The endpoint's server is
idle meanwhile, so the two phases never compete for the CPU. Greedy decoding with a fixed ``max_new_tokens``.

Reported: output tokens/s of each (completion tokens over wall time; the job's wall time runs from submit to
``completed``, start-up included), their ratio (target ≥ 3×), the job's start-up time (submit until its worker
reports ``generating``: queueing, process start, model load and warm-up) and the time to its first result part.
Results: ``benchmarks/results/batch_completions.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx

from model_engine_server.testing import eventually
from model_engine_server.testing import platform as kit
from model_engine_server.testing.platform import Platform

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "batch_completions.json"
AUTH = ("benchmark", "")
OWNER = ("admin", "")  # the demo endpoint's owner (bootstrap_owner); its key reads the endpoint's status
SUBJECTS = ["the sea", "a city at night", "mountains", "a library", "trains", "autumn", "the moon", "a market"]


def prompts(count: int) -> list[str]:
    return [f"Write one sentence about {SUBJECTS[i % len(SUBJECTS)]} (variation {i}):" for i in range(count)]


def start_platform(data_dir: Path) -> Platform:
    """``model-engine serve`` (the test kit's launcher) with its demo endpoint, once that endpoint is READY."""
    cache = os.environ.get("LLM_ENGINE_MODEL_CACHE_DIR") or str(ROOT / ".llm-engine" / "test-model-cache")
    platform = kit.start_platform(
        "serve", data_dir, migrate=False, model_cache_dir=cache, reconcile_interval_seconds="0.5"
    )

    def ready() -> bool:
        try:
            endpoint = httpx.get(f"{platform.url}/v1/llm/model-endpoints/smollm2-135m", auth=OWNER, timeout=2)
        except httpx.TransportError:
            return False
        return endpoint.status_code == 200 and endpoint.json()["status"] == "READY"

    try:
        eventually(ready, timeout=900, interval=0.5, what=lambda: f"the demo endpoint READY\n{platform.log_tail()}")
    except BaseException:
        platform.stop(timeout=60)
        raise
    return platform


def one_at_a_time(url: str, texts: list[str], max_new_tokens: int) -> dict[str, float]:
    tokens = 0
    started = time.monotonic()
    with httpx.Client(timeout=120, auth=OWNER) as client:
        for prompt in texts:
            response = client.post(
                f"{url}/v1/llm/completions-sync",
                params={"model_endpoint_name": "smollm2-135m"},
                json={"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": 0},
            )
            response.raise_for_status()
            tokens += response.json()["output"]["num_completion_tokens"]
    elapsed = time.monotonic() - started
    return {"seconds": elapsed, "completion_tokens": tokens, "tokens_per_second": tokens / elapsed}


def _worker_phase(data_dir: Path, job_id: str) -> str:
    try:
        raw = json.loads((data_dir / "objects" / "jobs" / job_id / "workers" / "0.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(raw.get("phase", ""))


def batch_job(url: str, data_dir: Path, texts: list[str], max_new_tokens: int, output: Path) -> dict[str, float]:
    body = {
        "output_data_path": output.as_uri(),
        "model_config": {"model": "smollm2-135m"},
        "content": {"prompts": texts, "max_new_tokens": max_new_tokens, "temperature": 0.0},
    }
    submitted = time.monotonic()
    response = httpx.post(f"{url}/v1/llm/batch-completions", json=body, auth=AUTH, timeout=60)
    response.raise_for_status()
    job_id = response.json()["job_id"]
    first_result: float | None = None
    generating: float | None = None
    while True:
        job = httpx.get(f"{url}/v2/batch-completions/{job_id}", auth=AUTH, timeout=10).json()["job"]
        if generating is None and _worker_phase(data_dir, job_id) in ("generating", "done"):
            generating = time.monotonic() - submitted
        if first_result is None and job["progress"]["done"] > 0:
            first_result = time.monotonic() - submitted
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - submitted
    if job["status"] != "completed":
        raise RuntimeError(f"the batch job ended {job['status']}: {job['status_reason']}")
    results = json.loads(output.read_text())
    tokens = sum(r["num_completion_tokens"] for r in results)
    return {
        "seconds": elapsed,
        "completion_tokens": tokens,
        "tokens_per_second": tokens / elapsed,
        "startup_seconds": generating if generating is not None else elapsed,
        "first_part_seconds": first_result if first_result is not None else elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory(prefix="llm-engine-batch-bench-") as tmp:
        served = start_platform(Path(tmp))
        url = served.url
        try:
            print(f"baseline: {len(texts)} prompts one at a time to the live endpoint …", flush=True)
            baseline = one_at_a_time(url, texts, args.max_new_tokens)
            print(f"  {baseline['tokens_per_second']:.1f} tokens/s in {baseline['seconds']:.0f} s", flush=True)
            print("batch job …", flush=True)
            batch = batch_job(url, Path(tmp), texts, args.max_new_tokens, Path(tmp) / "out.json")
        finally:
            served.stop(timeout=60)
    ratio = batch["tokens_per_second"] / baseline["tokens_per_second"]
    rate, seconds, startup = batch["tokens_per_second"], batch["seconds"], batch["startup_seconds"]
    first = batch["first_part_seconds"]
    print(f"  {rate:.1f} tokens/s in {seconds:.0f} s (start-up {startup:.1f} s, first part {first:.0f} s)")
    print(f"batch / one at a time: {ratio:.2f}× (target ≥ 3×)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "prompts": len(texts),
                "max_new_tokens": args.max_new_tokens,
                "baseline_one_at_a_time": baseline,
                "batch_job": batch,
                "ratio": ratio,
                "date": time.strftime("%Y-%m-%d"),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
