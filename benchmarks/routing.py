"""Replica routing policies against two replicas of the built-in engine, in one run, on the same workload.

    .venv/bin/python -m benchmarks.routing            # the full run (about 13 minutes)
    .venv/bin/python -m benchmarks.routing --quick    # fewer requests, for a smoke run

The workload is chat-like: conversations that share one of a few long system prompts (several distinct prefixes),
each request the system prompt plus a short question, arriving as a Poisson process (seeded: every policy gets the
same prompts at the same offsets). Two replicas of the built-in inference server (bundled SmolLM2-135M, float32, one
torch thread each, so the two cores are one per replica) serve it; requests go through the gateway's own
``UpstreamClient`` and ``ReplicaRouter``, streamed, with greedy decoding:

- ``random``: every request to a replica picked at random — what a Kubernetes Service (kube-proxy) does, and what the
  gateway did before it routed per pod;
- ``least_load``: the replica with the fewest requests in flight;
- ``prefix_affinity``: the replica that served the prompt's prefix last, unless it is overloaded.

Each policy gets freshly started replicas (an empty prefix cache), so no policy inherits another's warm caches.
Reported per policy: time to first token p50/p99, output tokens/s over the phase's wall time, requests that hit the
engine's prefix cache (from the replicas' ``/metrics``, when the engine has one), and the TTFT p50 ratio of
``random`` over each policy. Results go to ``benchmarks/results/routing.json`` and a chart to ``docs/img/routing.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from benchmarks.engines import builtin_command, log, start
from benchmarks.support import ROOT, percentile
from benchmarks.svg_chart import bar_chart_svg
from model_engine_server.config import RoutingPolicy
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.inference.adapters import TgiAdapter
from model_engine_server.inference.routing import ReplicaRouter
from model_engine_server.inference.upstream import UpstreamClient, UpstreamPolicy
from model_engine_server.testing import free_port
from model_engine_server.testing.platform import stop_process

RESULTS = ROOT / "benchmarks" / "results" / "routing.json"
CHART = ROOT / "docs" / "img" / "routing.svg"
POLICIES = ("random", RoutingPolicy.LEAST_LOAD.value, RoutingPolicy.PREFIX_AFFINITY.value)
ADAPTER = TgiAdapter()

_TOPICS = ("a travel agency", "a bakery", "a bicycle repair shop", "a public library", "a plant nursery")
_RULES = (
    "Answer politely and briefly. Never invent prices, opening hours or stock levels; say you will check instead. "
    "If the customer is upset, apologise once and offer to pass the message to a manager. Keep every answer under "
    "three sentences, avoid jargon, and end with a question that moves the conversation forward. "
)
_QUESTIONS = (
    "What do you recommend for a beginner?",
    "Can I change my order after paying?",
    "Do you have anything for a small budget?",
    "How long does it usually take?",
    "Is there a discount for students?",
    "What should I bring with me?",
    "Can you explain how it works?",
    "Who should I talk to about a complaint?",
)


@dataclass(frozen=True)
class Workload:
    prefixes: int
    requests: int
    rate_per_second: float
    max_new_tokens: int
    system_repeats: int  # how long each system prompt is, in repetitions of the rules paragraph
    prefix_cache_mb: int  # per replica: room for about half the system prompts' key/values
    seed: int = 17


@dataclass
class Phase:
    policy: str
    requests: int
    output_tokens: int
    seconds: float
    tokens_per_second: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    prefix_cache_hits: float | None  # the engines' own count, when they report one
    served: dict[str, int]  # requests each replica completed (warm-up included)


def system_prompt(index: int, repeats: int) -> str:
    return f"You are the assistant of {_TOPICS[index % len(_TOPICS)]} (desk {index}). " + _RULES * repeats


def schedule(workload: Workload) -> list[tuple[float, str]]:
    """(send offset in seconds, prompt) for every request: Poisson arrivals, a random prefix and question each."""
    rng = random.Random(workload.seed)
    systems = [system_prompt(i, workload.system_repeats) for i in range(workload.prefixes)]
    at, plan = 0.0, []
    for _ in range(workload.requests):
        at += rng.expovariate(workload.rate_per_second)
        plan.append((at, f"{rng.choice(systems)}\nCustomer: {rng.choice(_QUESTIONS)}\nAssistant:"))
    return plan


async def one_request(
    client: UpstreamClient, upstreams: list[str], prompt: str, max_new_tokens: int
) -> tuple[float, int]:
    """Time to first token and tokens produced by one streamed greedy completion."""
    request = CompletionRequest(prompt=prompt, max_new_tokens=max_new_tokens, temperature=0.0)
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for delta in client.stream(upstreams, ADAPTER, request):
        if first is None and delta.text:
            first = time.perf_counter()
        if delta.finished:
            tokens = delta.num_completion_tokens or 0
    if first is None:
        raise RuntimeError("a stream produced no text")
    return first - sent, tokens


def chooser(policy: str, urls: list[str], rng: random.Random) -> Callable[[], list[str]]:
    """The upstream list the client gets per request: one random replica (a Service), or all (the gateway routes)."""
    if policy == "random":
        return lambda: [rng.choice(urls)]
    return lambda: urls


async def run_phase(policy: str, urls: list[str], plan: list[tuple[float, str]], workload: Workload) -> Phase:
    router_policy = RoutingPolicy.LEAST_LOAD if policy == "random" else RoutingPolicy(policy)
    router = ReplicaRouter(router_policy)
    client = UpstreamClient(UpstreamPolicy(read_timeout=600), router=router)
    pick = chooser(policy, urls, random.Random(workload.seed + 1))
    results: list[tuple[float, int]] = []

    async def send(offset: float, prompt: str, started: float) -> None:
        await asyncio.sleep(max(0.0, started + offset - time.perf_counter()))  # the arrival process, not a sync
        upstreams = pick()
        results.append(await one_request(client, upstreams, prompt, workload.max_new_tokens))

    await one_request(client, urls[:1], "Warm-up:", 2)  # first-request costs are not the policy's
    await one_request(client, urls[1:], "Warm-up:", 2)
    before = await prefix_hits(urls)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(send(offset, prompt, started) for offset, prompt in plan))
    finally:
        await client.aclose()
    seconds = time.perf_counter() - started
    after = await prefix_hits(urls)
    ttfts = [ttft * 1000 for ttft, _ in results]
    tokens = sum(n for _, n in results)
    hits = None if before is None or after is None else after - before
    return Phase(
        policy,
        len(results),
        tokens,
        seconds,
        tokens / seconds,
        percentile(ttfts, 0.5),
        percentile(ttfts, 0.99),
        hits,
        await served_counts(urls),
    )


_PREFIX_HITS = re.compile(r"^(llm_engine_prefix_cache_hits_total)(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)
_REQUESTS = re.compile(r"^(tgi_request_success_total)(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.MULTILINE)


async def _metric(urls: Sequence[str], pattern: re.Pattern[str]) -> float | None:
    total, seen = 0.0, False
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        for url in urls:
            text = (await http.get(f"{url}/metrics")).text
            for _, value in pattern.findall(text):
                total, seen = total + float(value), True
    return total if seen else None


async def prefix_hits(urls: Sequence[str]) -> float | None:
    return await _metric(urls, _PREFIX_HITS)


async def served_counts(urls: Sequence[str]) -> dict[str, int]:
    counts = {}
    for index, url in enumerate(urls):
        value = await _metric([url], _REQUESTS)
        counts[f"replica {index}"] = int(value or 0)
    return counts


def start_replicas(workdir: Path, policy: str, cache_mb: int) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    processes, urls = [], []
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        for index in range(2):
            command = [*builtin_command(free_port()), "--num-threads", "1", "--prefix-cache-mb", str(cache_mb)]
            process, url = start(command, workdir / f"{policy}-{index}.log")
            processes.append(process)
            urls.append(url)
    except BaseException:
        for process in processes:
            stop_process(process, timeout=30)
        raise
    return processes, urls


def measure(policy: str, plan: list[tuple[float, str]], workload: Workload, workdir: Path) -> Phase:
    log(f"{policy}: starting two replicas")
    processes, urls = start_replicas(workdir, policy, workload.prefix_cache_mb)
    try:
        log(f"{policy}: {len(plan)} requests at {workload.rate_per_second}/s")
        phase = asyncio.run(run_phase(policy, urls, plan, workload))
    finally:
        for process in processes:
            stop_process(process, timeout=30)
    hits = "n/a" if phase.prefix_cache_hits is None else f"{phase.prefix_cache_hits:.0f}"
    log(
        f"{policy}: TTFT p50 {phase.ttft_p50_ms:.0f} ms, p99 {phase.ttft_p99_ms:.0f} ms, "
        f"{phase.tokens_per_second:.1f} tokens/s, prefix-cache hits {hits}, served {phase.served}"
    )
    return phase


def table(phases: list[Phase]) -> str:
    header = f"{'policy':<16} {'reqs':>4} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'cache hits':>10}  served"
    rows = [
        f"{p.policy:<16} {p.requests:>4} {p.tokens_per_second:>9.1f} {p.ttft_p50_ms:>7.0f}ms {p.ttft_p99_ms:>7.0f}ms "
        f"{'n/a' if p.prefix_cache_hits is None else f'{p.prefix_cache_hits:.0f}':>10}  {p.served}"
        for p in phases
    ]
    return "\n".join([header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default, meaning in (
        ("--rate", float, 0.3, "Arrivals per second."),
        ("--prefix-cache-mb", int, 96, "Each replica's prefix cache (0: none)."),
        ("--workdir", Path, Path(os.environ.get("TMPDIR", "/tmp")) / "routing-benchmark", "Replica logs."),
    ):
        parser.add_argument(flag, type=kind, default=default, help=meaning)
    parser.add_argument("--quick", action="store_true", help="Fewer requests, not recorded.")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    workload = Workload(
        prefixes=8,
        requests=24 if args.quick else 60,
        rate_per_second=args.rate,
        max_new_tokens=16,
        system_repeats=6,
        prefix_cache_mb=args.prefix_cache_mb,
    )
    plan = schedule(workload)
    phases = [measure(policy, plan, workload, args.workdir) for policy in POLICIES]
    baseline = phases[0].ttft_p50_ms
    ratios = {p.policy: baseline / p.ttft_p50_ms for p in phases[1:]}
    print(table(phases))
    print("\n".join(f"TTFT p50 random / {policy}: {ratio:.2f}x" for policy, ratio in ratios.items()))
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "workload": asdict(workload),
        "phases": [asdict(p) for p in phases],
        "ttft_p50_random_over": ratios,
    }
    if args.quick:
        return  # a smoke run is not recorded
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    groups = ["TTFT p50 (ms)", "TTFT p99 (ms)"]
    series = {p.policy: [p.ttft_p50_ms, p.ttft_p99_ms] for p in phases}
    CHART.write_text(bar_chart_svg("Time to first token by routing policy, 2 built-in replicas", groups, series))
    log(f"wrote {RESULTS.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
