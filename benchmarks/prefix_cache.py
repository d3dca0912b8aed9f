"""Time to first token with a long shared system prompt: the built-in server's prefix cache on against off, in one run.

    .venv/bin/python -m benchmarks.prefix_cache           # about 5 minutes on two idle cores
    .venv/bin/python -m benchmarks.prefix_cache --quick   # fewer requests

The same server (bundled SmolLM2-135M, float32) is started twice, one run after the other so they never compete for
the CPU: with ``--prefix-cache-mb 0`` (off) and with the default cache (on). Each run first sends one request with the
system prompt (the warm-up that fills the cache when it is on), then streams requests whose prompts are that system
prompt (about 700 tokens) followed by a different short question, at concurrency 1 and 4, greedy, 16 new tokens.
Reported per run and concurrency: TTFT p50/p95 and output tokens/s, the off/on ratio of TTFT p50, and the cache's own
counters from ``/metrics``. Results go to ``benchmarks/results/prefix_cache.json`` and ``docs/img/prefix_cache.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

import httpx

from benchmarks.inference_server import LevelResult, log, stream_one, summarize
from benchmarks.support import ROOT
from benchmarks.svg_chart import bar_chart_svg
from model_engine_server.testing.platform import running_builtin_server

RESULTS = ROOT / "benchmarks" / "results" / "prefix_cache.json"
CHART = ROOT / "docs" / "img" / "prefix_cache.svg"
MODEL = "smollm2-135m"
MAX_NEW_TOKENS = 16
START_TIMEOUT_SECONDS = 600

# A support assistant's standing instructions: distinct sentences (no repetition the model could exploit).
RULES = [
    "Greet the customer by name when the name is known, and never ask for a password or a card number.",
    "Orders ship within two working days from the warehouse in Leeds; express delivery costs 9 pounds.",
    "Returns are free within 30 days if the item is unused and in its original packaging.",
    "Tents come with a two-year warranty; sleeping bags and backpacks with a five-year warranty.",
    "Repairs of zips, seams and buckles are free during the warranty and cost 15 pounds after it.",
    "Gift cards never expire and can be used online and in all eleven shops.",
    "Members of the Trail Club get 10 percent off full-price items and free express delivery.",
    "Price matching applies to identical items sold by UK retailers with stock on the day of the request.",
    "Boots can be exchanged for another size once, even after they have been worn outdoors for a week.",
    "Stoves and gas canisters cannot be shipped abroad; suggest a shop pickup to foreign customers.",
    "Rental gear (tents, crampons, ice axes) is booked by the day; a deposit of 50 pounds is held.",
    "If an order is late by more than five days, offer a refund of the delivery cost without being asked.",
    "Children's gear is exempt from VAT; mention it when a customer asks about prices for kids.",
    "Never promise stock that the stock check does not show; offer a back-in-stock e-mail instead.",
    "Answer in the customer's language when it is English, French, German or Spanish; otherwise English.",
    "Escalate complaints about injuries, recalls or safety to a human agent at once, with the order number.",
    "Keep answers under one hundred words, friendly and concrete, and end with one helpful suggestion.",
    "The shops open from nine to six on weekdays and from ten to four on Saturdays; they close on Sundays.",
    "Lost parcels are replaced after the carrier confirms the loss, which usually takes three working days.",
    "Waterproof ratings are given in millimetres of hydrostatic head; above 10,000 is good for mountains.",
    "Do not discuss competitors' products beyond price matching, and never criticise another retailer.",
    "Customers may change the delivery address until the order is packed; after that, the carrier decides.",
    "Student discounts of 15 percent apply with a valid student card, online and in the shops.",
    "The loyalty points of the old scheme were converted to Trail Club credit in March and do not expire.",
    "Recommend the fitting service for boots and backpacks; it is free and takes about twenty minutes.",
]
SYSTEM_PROMPT = (
    "You are the support assistant of Northwind Outfitters, a shop for hiking and camping gear.\n"
    + "".join(f"Rule {i}: {rule}\n" for i, rule in enumerate(RULES, start=1))
)
QUESTIONS = [
    "Customer: Can I return a tent I bought three weeks ago? I never used it.",
    "Customer: How much does express delivery cost for a Trail Club member?",
    "Customer: My boots are too small after one walk. What can I do?",
    "Customer: Do you ship camping stoves to France?",
    "Customer: The zip of my five-year-old sleeping bag broke. Is the repair free?",
    "Customer: Are the shops open on Sunday afternoon?",
    "Customer: My parcel is six days late. Can I get anything back?",
    "Customer: What waterproof rating should I choose for hiking in the Alps?",
]


def prompt(question: str) -> str:
    return f"{SYSTEM_PROMPT}\n{question}\nAssistant:"


async def run_level(url: str, concurrency: int, requests: int) -> LevelResult:
    """``requests`` prompts (each question in turn) streamed by ``concurrency`` closed-loop clients."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(prompt(QUESTIONS[i % len(QUESTIONS)]))
    timings = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def worker() -> None:
            while not queue.empty():
                timings.append(await stream_one(client, queue.get_nowait(), MAX_NEW_TOKENS))

        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = asyncio.get_running_loop().time() - started
    return summarize("server", concurrency, timings, seconds)


def cache_counters(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    found = re.findall(r"^llm_engine_prefix_cache_(lookups|hits|reused_tokens|bytes)(?:_total)? (\S+)$", text, re.M)
    return {name: float(value) for name, value in found}


def measure(mode: str, levels: list[tuple[int, int]], workdir: Path) -> tuple[list[LevelResult], dict[str, float]]:
    megabytes = "0" if mode == "off" else "256"
    log(f"prefix cache {mode}: starting the server")
    flags = ["--max-input-tokens", "1536", "--max-total-tokens", "2048", "--prefix-cache-mb", megabytes]
    with running_builtin_server(workdir / f"server-{mode}.log", *flags, "--log-level", "warning") as server:
        server.wait_healthy(START_TIMEOUT_SECONDS)
        asyncio.run(run_level(server.url, 1, 1))  # the warm-up: fills the cache (when on) with the system prompt
        results = []
        for concurrency, requests in levels:
            level = asyncio.run(run_level(server.url, concurrency, requests))
            level.name = f"cache {mode}"
            log(f"  concurrency {concurrency}: TTFT p50 {level.ttft_p50 * 1000:.0f} ms")
            results.append(level)
        return results, cache_counters(server.url)


def print_table(levels: list[LevelResult], ratios: dict[str, float]) -> None:
    print("| run | concurrency | requests | tokens/s | TTFT p50 | TTFT p95 | TTFT p50 off/on |")
    print("|---|---|---|---|---|---|---|")
    for lv in levels:
        ratio = f"{ratios[str(lv.concurrency)]:.2f}×" if lv.name == "cache on" else ""
        print(
            f"| {lv.name} | {lv.concurrency} | {lv.requests} | {lv.tokens_per_second:.1f} | "
            f"{lv.ttft_p50 * 1000:.0f} ms | {lv.ttft_p95 * 1000:.0f} ms | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    levels = [(1, 4), (4, 8)] if args.quick else [(1, 8), (4, 16)]
    with tempfile.TemporaryDirectory(prefix="prefix-cache-benchmark-") as workdir:
        off, _ = measure("off", levels, Path(workdir))
        on, counters = measure("on", levels, Path(workdir))
    ratios = {str(a.concurrency): round(a.ttft_p50 / b.ttft_p50, 2) for a, b in zip(off, on, strict=True)}
    print_table(off + on, ratios)
    print(f"cache counters after the 'on' run: {counters}")
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "model": MODEL,
        "max_new_tokens": MAX_NEW_TOKENS,
        "levels": [asdict(level) for level in off + on],
        "ttft_p50_off_over_on": ratios,
        "cache_counters": counters,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    groups = [f"concurrency {c}" for c, _ in levels]
    series = {"cache off": [lv.ttft_p50 * 1000 for lv in off], "cache on": [lv.ttft_p50 * 1000 for lv in on]}
    CHART.write_text(bar_chart_svg("TTFT p50 (ms), ~700-token shared system prompt, SmolLM2-135M", groups, series))
    log(f"wrote {RESULTS.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
