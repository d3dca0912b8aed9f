"""Benchmark the built-in inference server against ``model.generate`` answering the same requests one at a time.

    .venv/bin/python benchmarks/inference_server.py            # concurrency 1, 4, 16, 32 (a few minutes)
    .venv/bin/python benchmarks/inference_server.py --quick    # concurrency 1 and 16, shorter outputs

The server runs as its own process (started here, on a free loopback port); the baseline loads the same checkpoint in
this process and runs before the server starts and again after it has stopped, so the two never compete for the CPU.
On a shared machine the load changes over minutes, so the faster of the two baseline runs is the one compared
against (the conservative choice). Each request streams from
``/generate_stream`` with greedy decoding; the baseline uses a streamer to time each token the same way.

Reported per level: output tokens/s (all requests' tokens over the level's wall time), time to first token and
inter-token latency (p50/p95), and the ratio of tokens/s to the baseline. The server's peak RSS comes from the
kernel's high-water mark (``VmHWM``). Results go to ``benchmarks/results/inference_server.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support import percentile
from model_engine_server.testing import free_port
from model_engine_server.testing.platform import builtin_server_command, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "inference_server.json"

# Plain-text prompts this model continues for at least 64 tokens with greedy decoding (instruction-style prompts
# without the chat template often make it stop at once), so every request does comparable work.
PROMPTS = [
    "def quicksort(items):",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "Once upon a time, in a land far away, there lived a",
    "List five fruits and their colours:",
    "The three laws of thermodynamics are",
    "Translate to French: Good morning, how are you?",
    "A recipe for pancakes: first,",
    "The history of the Roman Empire began",
    "Q: What is the largest planet in the solar system?\nA:",
    "The best way to learn programming is",
    "Here is a list of ten animals:\n1.",
    "import numpy as np\n",
    "Dear diary, today I",
    "The weather forecast for tomorrow:",
    "Step 1: Preheat the oven",
]


@dataclass
class RequestTiming:
    ttft: float  # seconds from sending the request to its first token
    itls: list[float]  # seconds between consecutive tokens
    tokens: int


@dataclass
class LevelResult:
    name: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_second: float
    ttft_p50: float
    ttft_p95: float
    itl_p50: float
    itl_p95: float
    speedup_vs_baseline: float | None = None


@dataclass
class Report:
    model_id: str
    max_new_tokens: int
    machine: dict[str, Any]
    baseline: LevelResult | None = None
    baseline_runs: list[LevelResult] = field(default_factory=list)
    levels: list[LevelResult] = field(default_factory=list)
    server_peak_rss_mb: float | None = None
    server_start_seconds: float | None = None


def summarize(name: str, concurrency: int, timings: list[RequestTiming], seconds: float) -> LevelResult:
    tokens = sum(t.tokens for t in timings)
    ttfts = [t.ttft for t in timings]
    itls = [gap for t in timings for gap in t.itls]
    return LevelResult(
        name=name,
        concurrency=concurrency,
        requests=len(timings),
        tokens=tokens,
        seconds=round(seconds, 3),
        tokens_per_second=round(tokens / seconds, 2),
        ttft_p50=round(percentile(ttfts, 0.5), 4),
        ttft_p95=round(percentile(ttfts, 0.95), 4),
        itl_p50=round(percentile(itls, 0.5), 4),
        itl_p95=round(percentile(itls, 0.95), 4),
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the server ---------------------------------------------------------------------------------------------------


def start_server(model_id: str, port: int, max_total_tokens: int) -> subprocess.Popen[bytes]:
    command = builtin_server_command(
        model_id,
        port,
        "--max-total-tokens",
        str(max_total_tokens),
        "--max-input-tokens",
        str(max_total_tokens // 2),
        "--log-level",
        "warning",
    )
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def exit_output(server: subprocess.Popen[bytes]) -> str:
    """What an exited server wrote to stderr (nothing while it runs: reading would block)."""
    if server.poll() is None or server.stderr is None:
        return ""
    return server.stderr.read().decode(errors="replace")[-2000:]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def stream_one(client: httpx.AsyncClient, prompt: str, max_new_tokens: int) -> RequestTiming:
    body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}
    sent = time.perf_counter()
    stamps: list[float] = []
    async with client.stream("POST", "/generate_stream", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(f"server error: {event}")
            stamps.append(time.perf_counter())
    return RequestTiming(stamps[0] - sent, [b - a for a, b in zip(stamps, stamps[1:], strict=False)], len(stamps))


async def run_level(url: str, concurrency: int, requests: int, max_new_tokens: int) -> LevelResult:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)
    timings: list[RequestTiming] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                prompt = queue.get_nowait()
                timings.append(await stream_one(client, prompt, max_new_tokens))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return summarize("server", concurrency, timings, seconds)


# --- the baseline -------------------------------------------------------------------------------------------------


def load_baseline(checkpoint: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model_engine_server.inference.server.engine import configure_threads

    configure_threads()
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model: Any = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    return model.eval(), tokenizer


def run_baseline(model: Any, tokenizer: Any, requests: int, max_new_tokens: int) -> LevelResult:
    """The same model answering the same requests one at a time with ``model.generate`` (greedy)."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class TokenClock(BaseStreamer):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.calls = 0

        def put(self, _value: Any) -> None:
            self.calls += 1
            if self.calls > 1:  # the first call carries the prompt
                self.stamps.append(time.perf_counter())

        def end(self) -> None:
            pass

    timings: list[RequestTiming] = []
    with torch.inference_mode():
        model.generate(**tokenizer("warm up", return_tensors="pt"), max_new_tokens=2, do_sample=False)
        started = time.perf_counter()
        for i in range(requests):
            inputs = tokenizer(PROMPTS[i % len(PROMPTS)], return_tensors="pt")
            clock = TokenClock()
            sent = time.perf_counter()
            model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=clock)
            stamps = clock.stamps
            timings.append(
                RequestTiming(stamps[0] - sent, [b - a for a, b in zip(stamps, stamps[1:], strict=False)], len(stamps))
            )
            log(f"  baseline request {i + 1}/{requests}: {len(stamps)} tokens")
        seconds = time.perf_counter() - started
    return summarize("baseline (model.generate, one at a time)", 1, timings, seconds)


# --- report -------------------------------------------------------------------------------------------------------


def print_table(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Built-in inference server vs model.generate ({report.model_id}, "
        f"{report.max_new_tokens} new tokens, greedy)"
    )
    for column in (
        "run",
        "conc.",
        "requests",
        "tokens",
        "tokens/s",
        "× baseline",
        "TTFT p50",
        "TTFT p95",
        "ITL p50",
        "ITL p95",
    ):
        table.add_column(column, justify="right" if column != "run" else "left")
    rows = ([report.baseline] if report.baseline else []) + report.levels
    for r in rows:
        speedup = f"{r.speedup_vs_baseline:.2f}×" if r.speedup_vs_baseline is not None else "1.00×"
        table.add_row(
            r.name,
            str(r.concurrency),
            str(r.requests),
            str(r.tokens),
            f"{r.tokens_per_second:.1f}",
            speedup,
            f"{r.ttft_p50 * 1000:.0f} ms",
            f"{r.ttft_p95 * 1000:.0f} ms",
            f"{r.itl_p50 * 1000:.0f} ms",
            f"{r.itl_p95 * 1000:.0f} ms",
        )
    console = Console(width=160)
    console.print(table)
    if report.server_peak_rss_mb is not None:
        console.print(
            f"Server peak RSS: {report.server_peak_rss_mb:.0f} MB; "
            f"start-up (load + warm-up): {report.server_start_seconds:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 16 only, 32 new tokens")
    parser.add_argument("--model-id", default="smollm2-135m")
    parser.add_argument("--concurrency", type=int, nargs="+", help="levels to run (default 1 4 16 32)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens per request (default 64; --quick 32)")
    parser.add_argument("--baseline-requests", type=int, help="requests for the baseline (default 8; --quick 4)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    levels = args.concurrency or ([1, 16] if args.quick else [1, 4, 16, 32])
    max_new_tokens = args.max_new_tokens or (32 if args.quick else 64)
    baseline_requests = args.baseline_requests or (4 if args.quick else 8)

    from model_engine_server.config import Settings
    from model_engine_server.inference.model_loading import resolve_model

    checkpoint = resolve_model(args.model_id, Settings().models_dir)
    report = Report(
        model_id=args.model_id,
        max_new_tokens=max_new_tokens,
        machine={
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
    )

    log(f"Baseline (before the server): {baseline_requests} requests with model.generate, one at a time ...")
    model, tokenizer = load_baseline(checkpoint)
    report.baseline_runs.append(run_baseline(model, tokenizer, baseline_requests, max_new_tokens))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log(f"Starting the server on {url} ...")
    started = time.monotonic()
    server = start_server(args.model_id, port, max_total_tokens=1024)
    try:
        wait_healthy(f"{url}/health", server, timeout=600, output=lambda: exit_output(server), interval=0.5)
        report.server_start_seconds = round(time.monotonic() - started, 2)
        asyncio.run(run_level(url, 2, 4, 4))  # warm-up, not measured
        for concurrency in levels:
            requests = max(4, 2 * concurrency) if not args.quick else max(4, concurrency)
            log(f"Server: concurrency {concurrency}, {requests} requests ...")
            result = asyncio.run(run_level(url, concurrency, requests, max_new_tokens))
            log(f"  {result.tokens_per_second:.1f} tokens/s, TTFT p50 {result.ttft_p50 * 1000:.0f} ms")
            report.levels.append(result)
        report.server_peak_rss_mb = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)

    log(f"Baseline (after the server): {baseline_requests} requests with model.generate, one at a time ...")
    report.baseline_runs.append(run_baseline(model, tokenizer, baseline_requests, max_new_tokens))
    report.baseline = max(report.baseline_runs, key=lambda run: run.tokens_per_second)
    for level in report.levels:
        level.speedup_vs_baseline = round(level.tokens_per_second / report.baseline.tokens_per_second, 2)

    print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.output.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(asdict(report), indent=2) + "\n")
    temporary.replace(args.output)
    log(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
