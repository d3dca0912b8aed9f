"""Load held: many completion requests through the gateway against the instant inference server, checking that none
fails and that the gateway's memory returns to where it was (no leak).

The gateway and the instant server (``model_engine_server.testing.tgi``) are the processes of
``benchmarks/gateway_overhead.py`` (the real gateway app, one READY endpoint); the load generator is its keep-alive
client in a process of its own. Baseline, in the same run: the same requests sent straight to the instant server
(throughput ratio). Memory: the gateway's resident set after a warm-up, and again after the run (and after every
round of a soak); the growth must stay under 50 MB. The resident set at start, before any request, is recorded too
(the warm-up's one-off growth — pools, caches, imports done on first use — is reported, not judged).

    .venv/bin/python -m benchmarks.load                     # 10,000 requests at concurrency 64
    .venv/bin/python -m benchmarks.load --soak-minutes 30   # rounds of 10,000 for 30 minutes, RSS after each
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gateway_overhead import Run, _run_load
from benchmarks.support import close_pipes, spawn_listening
from model_engine_server.testing.platform import stop_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "load.json"
MAX_RSS_GROWTH_MB = 50.0
WARMUP_REQUESTS = 2000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def run(requests: int = 10_000, concurrency: int = 64, soak_minutes: float = 0.0) -> dict[str, Any]:
    """The measurement; returns the figures (``errors``, ``rss_growth_mb`` …) without judging them."""
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp, contextlib.ExitStack() as processes:
        engine, engine_url = spawn_listening([sys.executable, "-m", "model_engine_server.testing.tgi", "--port", "0"])
        processes.callback(close_pipes, engine)
        processes.callback(stop_process, engine)
        gateway, gateway_url = spawn_listening(
            [sys.executable, "-m", "benchmarks.gateway_overhead", "--serve-gateway", engine_url, tmp, "open"]
        )
        processes.callback(close_pipes, gateway)
        processes.callback(stop_process, gateway)
        rss_at_start = rss_mb(gateway.pid)
        _run_load("gateway", gateway_url, "sync", concurrency, WARMUP_REQUESTS, "open")
        rss_before = rss_mb(gateway.pid)
        baseline = _run_load("direct", engine_url, "sync", concurrency, requests, "open")
        rounds: list[Run] = []
        rss_after_rounds: list[float] = []
        deadline = time.monotonic() + soak_minutes * 60
        while not rounds or time.monotonic() < deadline:
            rounds.append(_run_load("gateway", gateway_url, "sync", concurrency, requests, "open"))
            rss_after_rounds.append(rss_mb(gateway.pid))
            print(f"  round {len(rounds)}: {rounds[-1].rps:.0f} req/s, RSS {rss_after_rounds[-1]:.1f} MB", flush=True)
    gateway_rps = sum(r.rps for r in rounds) / len(rounds)
    return {
        "requests_per_round": requests,
        "concurrency": concurrency,
        "rounds": len(rounds),
        "soak_minutes": soak_minutes,
        "requests": sum(r.requests for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "gateway_rps": gateway_rps,
        "direct_rps": baseline.rps,
        "gateway_to_direct_rps_ratio": gateway_rps / baseline.rps,
        "p50_ms": rounds[-1].p50_ms,
        "p99_ms": rounds[-1].p99_ms,
        "rss_at_start_mb": rss_at_start,  # before any request: the warm-up's one-off growth is not a leak
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_after_rounds[-1],
        "rss_after_rounds_mb": rss_after_rounds,
        "rss_growth_mb": max(rss_after_rounds) - rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="repeat rounds for this long")
    args = parser.parse_args()
    result = run(args.requests, args.concurrency, args.soak_minutes)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["errors"] == 0 and result["rss_growth_mb"] <= MAX_RSS_GROWTH_MB
    print("PASS" if ok else f"FAIL: errors must be 0 and RSS growth <= {MAX_RSS_GROWTH_MB} MB")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
