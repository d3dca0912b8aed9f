"""Fair queueing: a polite tenant's latency on an endpoint another tenant floods, with and without fair queueing.

One instant TGI-protocol upstream that streams ``TOKENS`` tokens ``TOKEN_DELAY`` apart and takes at most
``UPSTREAM_CONCURRENCY`` requests at once (429 beyond, like TGI); the endpoint's ``per_worker`` is that number and
the gateway's overcommit is 1, so the gateway is where requests wait. The polite tenant sends one stream at a
time; the flooding tenant keeps ``FLOOD_CONCURRENCY`` streams open. Three phases, each with its own gateway process:
the polite tenant alone (the baseline), both tenants with fair queueing, both first come first served.

Reported: the polite tenant's p50/p99 per phase and as a ratio to its unloaded figures (target: fair p99 <= 2x),
the flooding tenant's throughput, and errors. Results go to ``benchmarks/results/fairness.json``.

    .venv/bin/python -m benchmarks.fairness [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.gateway_process import serve_gateway
from benchmarks.support import ROOT, percentile, spawn_listening
from model_engine_server.testing.platform import stop_process

RESULTS = ROOT / "benchmarks" / "results" / "fairness.json"
ENDPOINT = "shared"
UPSTREAM_CONCURRENCY = 4
FLOOD_CONCURRENCY = 12
TOKENS = 5
TOKEN_DELAY = 0.02
TARGET_P99_RATIO = 2.0


async def _stream(client: httpx.AsyncClient, key: str) -> tuple[bool, float]:
    body = {"prompt": "fair share", "max_new_tokens": TOKENS, "temperature": 0}
    started = time.perf_counter()
    path = f"/v1/llm/completions-stream?model_endpoint_name={ENDPOINT}"
    async with client.stream("POST", path, json=body, headers={"x-api-key": key}) as response:
        text = await response.aread()
    ok = response.status_code == 200 and b'"finished":true' in text.replace(b" ", b"")
    return ok, time.perf_counter() - started


async def _phase(url: str, polite_requests: int, flood: bool) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=FLOOD_CONCURRENCY + 8, max_keepalive_connections=FLOOD_CONCURRENCY + 8)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        stop = asyncio.Event()
        flood_done = 0
        errors = 0

        async def flooder() -> None:
            nonlocal flood_done, errors
            while not stop.is_set():
                ok, _ = await _stream(client, "flood-key")
                flood_done += ok
                errors += not ok

        for _ in range(3):  # warm the connections and caches
            await _stream(client, "polite-key")
        flooders = [asyncio.create_task(flooder()) for _ in range(FLOOD_CONCURRENCY if flood else 0)]
        await asyncio.sleep(0.5 if flood else 0)  # let the flood fill the queue before measuring
        started = time.perf_counter()
        latencies = []
        for _ in range(polite_requests):
            ok, latency = await _stream(client, "polite-key")
            errors += not ok
            latencies.append(latency)
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*flooders)
    return {
        "polite_p50_ms": 1000 * percentile(latencies, 0.5),
        "polite_p99_ms": 1000 * percentile(latencies, 0.99),
        "flood_rps": flood_done / elapsed if flood else 0.0,
        "errors": errors,
    }


def _run_phase(engine_url: str, fair: bool, polite_requests: int, flood: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fairness-") as tmp:
        args = [sys.executable, "-m", "benchmarks.fairness", "--serve-gateway", engine_url, tmp, str(fair)]
        gateway, url = spawn_listening(args)
        try:
            return asyncio.run(_phase(url, polite_requests, flood))
        finally:
            stop_process(gateway)


def benchmark(quick: bool) -> dict[str, Any]:
    polite_requests = 60 if quick else 300
    engine_args = [sys.executable, "-m", "model_engine_server.testing.tgi", "--port", "0"]
    engine_args += ["--token-delay", str(TOKEN_DELAY), "--max-concurrent", str(UPSTREAM_CONCURRENCY)]
    engine, engine_url = spawn_listening(engine_args)
    try:
        phases = {}
        for name, fair, flood in (("unloaded", True, False), ("fair", True, True), ("fifo", False, True)):
            print(f"  {name} ...", flush=True)
            phases[name] = _run_phase(engine_url, fair, polite_requests, flood)
    finally:
        stop_process(engine)
    base = phases["unloaded"]
    summary = {
        f"{name}_polite_{q}_ratio": phases[name][f"polite_{q}_ms"] / base[f"polite_{q}_ms"]
        for name in ("fair", "fifo")
        for q in ("p50", "p99")
    }
    summary["target_met_fair_p99_le_2x"] = summary["fair_polite_p99_ratio"] <= TARGET_P99_RATIO
    summary["errors"] = sum(phase["errors"] for phase in phases.values())
    return {
        "benchmark": "fairness",
        "quick": quick,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "setup": {
            "upstream_concurrency": UPSTREAM_CONCURRENCY,
            "flood_concurrency": FLOOD_CONCURRENCY,
            "tokens": TOKENS,
            "token_delay_s": TOKEN_DELAY,
            "polite_requests": polite_requests,
        },
        "phases": phases,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="A polite tenant's latency next to a flooding one.")
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, noisier figures)")
    parser.add_argument("--serve-gateway", nargs=3, metavar=("UPSTREAM", "DATA_DIR", "FAIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        upstream, data_dir, fair = args.serve_gateway
        serve_gateway(
            upstream,
            Path(data_dir),
            ENDPOINT,
            "open",
            owner="flood-key",
            public=True,
            per_worker=UPSTREAM_CONCURRENCY,
            fair_queueing=fair == "True",
            fair_queue_overcommit=1.0,
        )
        return
    print("fairness: a polite tenant next to a flooding one (instant upstream, concurrency-limited)")
    result = benchmark(args.quick)
    for name, phase in result["phases"].items():
        print(
            f"{name:9} " + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in phase.items())
        )
    for key, value in result["summary"].items():
        print(f"{key:32} {value:.2f}" if isinstance(value, float) else f"{key:32} {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
