"""Scale to zero and back, measured: the cold start a user waits for, and replicas following a step load.

1. **Cold start** (the bundled model, its converted weights cached): ``model-engine serve`` with one endpoint at
   ``min_workers: 0``. Each round waits until the endpoint sleeps at zero workers, then times a streamed request from
   sending it to its first token (the gateway holds it while a replica starts), then a warm one the same way (the
   baseline, measured in the same run). Target: cold start <= 10 s on the development machine.
2. **Step load** (the instant TGI server, so replicas are cheap and the scaling itself is what shows): an endpoint
   with ``min_workers: 0, max_workers: 3, per_worker: 2`` gets 0, 4, 10, 2 and again 0 concurrent users streaming
   completions; every half second the run records ready and desired replicas, held requests (waiting for a wake-up)
   and outstanding requests, and per two-second bucket the p50/p99 latency. Plotted to ``docs/img/autoscaling-*.svg``.

    .venv/bin/python -m benchmarks.cold_start            # about four minutes
    .venv/bin/python -m benchmarks.cold_start --rounds 1 --step-seconds 10   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support import percentile
from benchmarks.svg_chart import line_chart_svg
from model_engine_server.config import Settings
from model_engine_server.testing.platform import inference_servers, running_builtin_server, running_platform

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "cold_start.json"
REPLICAS_CHART = ROOT / "docs" / "img" / "autoscaling-replicas.svg"
LATENCY_CHART = ROOT / "docs" / "img" / "autoscaling-latency.svg"
AUTH = ("bench", "")
PROMPT = {"prompt": "Write one sentence about the sea.", "temperature": 0}


@contextmanager
def platform(data_dir: Path, **settings: str) -> Iterator[httpx.Client]:
    """``model-engine serve`` (gateway, reconciler, local orchestrator, worker) on a free port."""
    with (
        running_platform(
            "serve", data_dir, migrate=False, timeout=120, demo_model="", reconcile_interval_seconds="0.5", **settings
        ) as serve,
        httpx.Client(base_url=serve.url, auth=AUTH, timeout=600) as client,
    ):
        yield client


def create(client: httpx.Client, name: str, **config: Any) -> None:
    body = {"name": name, "model_name": "smollm2-135m", "min_workers": 0, "max_workers": 1, **config}
    created = client.post("/v1/llm/model-endpoints", json=body)
    created.raise_for_status()


def deployment(client: httpx.Client, name: str) -> tuple[int, int, str]:
    spec = client.get(f"/v1/llm/model-endpoints/{name}").json()["spec"]
    state = spec["deployment_state"]
    return state["available_workers"], state["unavailable_workers"], spec["status_reason"] or ""


def wait_for(client: httpx.Client, name: str, what: str, check: Any, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not check(*deployment(client, name)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: not {what} within {timeout:.0f}s: {deployment(client, name)}")
        time.sleep(0.2)


def first_token_seconds(client: httpx.Client, name: str, max_new_tokens: int = 8) -> tuple[float, float]:
    """(seconds to the first token, seconds to the end) of one streamed request."""
    started = time.perf_counter()
    first = 0.0
    body = {**PROMPT, "max_new_tokens": max_new_tokens}
    params = {"model_endpoint_name": name}
    with client.stream("POST", "/v1/llm/completions-stream", params=params, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event["error"]:
                    raise RuntimeError(event["error"])
                first = first or time.perf_counter() - started
    return first, time.perf_counter() - started


def wait_asleep(client: httpx.Client, data_dir: Path, name: str, server: str) -> None:
    """Asleep and its last replica process gone: the next request is a true cold start."""
    wait_for(client, name, "asleep", lambda available, _u, reason: available == 0 and "Idle" in reason)
    deadline = time.monotonic() + 120
    while inference_servers(data_dir, server, name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: its replica did not stop")
        time.sleep(0.2)


def bare_start_seconds(log: Path) -> float:
    """The baseline: the built-in server started by hand, from launch to a healthy /health."""
    started = time.perf_counter()
    with running_builtin_server(log) as server:
        server.wait_healthy()
        return time.perf_counter() - started


def cold_starts(rounds: int) -> dict[str, Any]:
    models = Settings().models_dir  # the converted bundled model, reused
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        data_dir = Path(tmp)
        with platform(data_dir, scale_to_zero_idle_seconds="3", model_cache_dir=str(models)) as client:
            create(client, "cold")
            wait_for(client, "cold", "ready", lambda available, _u, _r: available == 1)
            bare, cold, warm = [], [], []
            for round_ in range(rounds):
                wait_asleep(client, data_dir, "cold", "model_engine_server.inference.server")
                # Back to back, so both see the same machine: the server alone, then the platform's cold start.
                bare.append(bare_start_seconds(data_dir / "bare.log"))
                cold.append(first_token_seconds(client, "cold")[0])
                warm.append(first_token_seconds(client, "cold")[0])
                print(f"round {round_ + 1}: server alone {bare[-1]:.2f}s, cold {cold[-1]:.2f}s, warm {warm[-1]:.3f}s")
    return {
        "bare_server_start_seconds": bare,
        "platform_overhead_p50_seconds": percentile(cold, 0.5) - percentile(bare, 0.5),
        "cold_first_token_seconds": cold,
        "warm_first_token_seconds": warm,
        "cold_p50_seconds": percentile(cold, 0.5),
        "warm_p50_seconds": percentile(warm, 0.5),
        "cold_to_warm_ratio": percentile(cold, 0.5) / max(percentile(warm, 0.5), 1e-9),
        "target_seconds": 10.0,
        "within_target": max(cold) <= 10.0,
    }


@dataclass
class StepLoad:
    client: httpx.Client
    started: float = field(default_factory=time.monotonic)
    users: int = 0
    done: list[tuple[float, float, bool]] = field(default_factory=list)  # (end time, latency, ok)
    outstanding: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def user(self, index: int) -> None:
        while not self.stop.is_set():
            if index >= self.users:
                time.sleep(0.05)  # this user is idle in the current step
                continue
            with self.lock:
                self.outstanding += 1
            began = time.monotonic()
            try:
                first_token_seconds(self.client, "steps", max_new_tokens=40)
                ok = True
            except (httpx.HTTPError, RuntimeError):
                ok = False
            with self.lock:
                self.outstanding -= 1
                self.done.append((time.monotonic() - self.started, time.monotonic() - began, ok))


def held_requests(client: httpx.Client) -> float:
    found = re.findall(r"^llm_engine_endpoint_held_requests\{[^}]*\} ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    return sum(float(value) for value in found)


def step_load(step_seconds: float) -> dict[str, Any]:
    command = f"{sys.executable} -m model_engine_server.testing.tgi --token-delay 0.02"
    settings = {
        "inference_server_command": command,
        "scale_to_zero_idle_seconds": str(step_seconds / 2),
        "autoscale_scale_up_window_seconds": "3",
        "autoscale_scale_down_window_seconds": str(step_seconds / 2),
    }
    steps = [0, 4, 10, 2, 0]
    with tempfile.TemporaryDirectory(prefix="step-load-") as tmp, platform(Path(tmp), **settings) as client:
        create(client, "steps", max_workers=3, per_worker=2)
        wait_asleep(client, Path(tmp), "steps", "model_engine_server.testing.tgi")
        load = StepLoad(client)
        threads = [threading.Thread(target=load.user, args=(i,), daemon=True) for i in range(max(steps))]
        for thread in threads:
            thread.start()
        samples: list[dict[str, float]] = []
        for users in steps:
            load.users = users
            step_end = time.monotonic() + step_seconds
            while time.monotonic() < step_end:
                available, unavailable, _ = deployment(client, "steps")
                samples.append(
                    {
                        "t": time.monotonic() - load.started,
                        "users": users,
                        "ready": available,
                        "desired": available + unavailable,
                        "held": held_requests(client),
                        "outstanding": load.outstanding,
                    }
                )
                time.sleep(0.5)  # the sampling period
        load.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return {"samples": samples, "latency": latency_buckets(load.done), "failed": sum(not ok for *_, ok in load.done)}


def latency_buckets(done: list[tuple[float, float, bool]], width: float = 2.0) -> list[dict[str, float]]:
    buckets: dict[int, list[float]] = {}
    for end, latency, ok in done:
        if ok:
            buckets.setdefault(int(end // width), []).append(latency)
    return [
        {"t": (b + 1) * width, "p50": percentile(v, 0.5), "p99": percentile(v, 0.99), "n": len(v)}
        for b, v in sorted(buckets.items())
    ]


def draw(steps: dict[str, Any]) -> None:
    samples, buckets = steps["samples"], steps["latency"]
    charts = [
        (REPLICAS_CHART, "Step load: users, replicas and queue", samples, ("users", "desired", "ready", "held")),
        (LATENCY_CHART, "Step load: request latency (40 tokens), seconds", buckets, ("p50", "p99")),
    ]
    for path, title, rows, keys in charts:
        series = {key: [row[key] for row in rows] for key in keys}
        path.write_text(line_chart_svg(title, "seconds", [row["t"] for row in rows], series))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold starts measured")
    parser.add_argument("--step-seconds", type=float, default=20.0, help="length of each load step")
    args = parser.parse_args()
    results = {"cold_start": cold_starts(args.rounds), "step_load": step_load(args.step_seconds)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    draw(results["step_load"])
    cold = results["cold_start"]
    print(
        f"cold start to first token: p50 {cold['cold_p50_seconds']:.2f}s (target <= 10 s: "
        f"{'met' if cold['within_target'] else 'MISSED'}); the server alone starts in "
        f"{percentile(cold['bare_server_start_seconds'], 0.5):.2f}s; warm {cold['warm_p50_seconds']:.3f}s; "
        f"ratio {cold['cold_to_warm_ratio']:.0f}x; step load: {results['step_load']['failed']} failed requests"
    )


if __name__ == "__main__":
    main()
