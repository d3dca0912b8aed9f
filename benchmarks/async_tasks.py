"""Async completions: enqueue-to-result latency and tasks/s over Redis and over the embedded SQLite broker, against the
same completions made synchronously through the same gateway in the same run.

Processes: the instant TGI server (``model_engine_server.testing.tgi``, answers at once, so only the platform is
measured), the real gateway (uvicorn, SQLite registry, open auth), and two worker processes
(``start_worker_process``, as ``model-engine serve`` starts them). The load generator is this process.

For each broker:
1. baseline: ``--tasks`` completions-sync calls one at a time (latency p50/p99), then ``--concurrency`` at a time
   (calls/s);
2. latency: the same number of completions-async tasks one at a time (each submitted once the last one is done), the
   workers running and idle otherwise, as the gateway benchmark measures added latency at concurrency 1; a task's
   latency is from the start of its submit to the moment the worker stored its result (the result backend's
   ``date_done``, so polling adds nothing to it);
3. throughput: the workers are stopped, the same number of tasks is queued, two fresh workers are started, and
   tasks/s is the rate at which results are stored (first to last), so the gateway's submit rate does not cap it;
4. every task of both phases is read back through ``GET /v1/async-tasks/{id}`` and must be SUCCESS with the
   expected text ("lost" counts the ones that are not).

Targets (Redis): added p50 (async p50 minus sync p50) at most 20 ms, at least 200 tasks/s, nothing lost.
Results: a table, and ``benchmarks/results/async_tasks.json``.

    .venv/bin/python -m benchmarks.async_tasks [--tasks 2000] [--brokers redis,embedded] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.support import percentile, spawn_listening
from model_engine_server.testing.platform import stop_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "async_tasks.json"
REDIS_URL = os.environ.get("LLM_ENGINE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
ENDPOINT = "bench"
OWNER_KEY = "bench-key"
PROMPT = "Summarise the benefits of connection pooling in one sentence"
MAX_NEW_TOKENS = 16
POLL_SECONDS = 0.005
TARGETS = {"redis_added_p50_ms": 20.0, "redis_tasks_per_s": 200.0}


def _serve_gateway() -> None:
    """The real gateway (settings from the environment) with a static route to the instant server."""
    import socket

    import uvicorn

    from benchmarks.gateway_overhead import StaticResolver
    from model_engine_server.api.app import create_app
    from model_engine_server.config import load_settings

    settings = load_settings()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # before "listening on": the load generator may connect at once
    app = create_app(settings, resolver=StaticResolver(os.environ["BENCH_UPSTREAM"]))
    config = uvicorn.Config(app, loop="uvloop", http="httptools", access_log=False, log_level="warning", backlog=4096)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


async def _register(settings: Any, upstream_pid: int, upstream_port: int) -> None:
    """A READY endpoint, and its replica announced the way the local orchestrator does (its state file)."""
    from model_engine_server.db.repositories import EndpointRegistry
    from model_engine_server.db.session import create_engine, create_session_factory
    from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ObservedState
    from model_engine_server.orchestration.local.directory import state_file_path
    from model_engine_server.orchestration.local.processes import process_start_time
    from model_engine_server.orchestration.local.state import DeploymentRecord, ReplicaRecord, StateFile

    engine = create_engine(settings.database_url)
    registry = EndpointRegistry(create_session_factory(engine))
    # Capacity for every worker thread: the benchmark measures the queue, not the per-endpoint bound.
    config = EndpointConfig(model_name="smollm2-135m", max_workers=1, per_worker=64)
    endpoint = await registry.create(owner=OWNER_KEY, name=ENDPOINT, config=config)
    await registry.record_observed(endpoint.id, endpoint.revision, ObservedState(EndpointStatus.READY, 1))
    await engine.dispose()
    replica = ReplicaRecord(0, upstream_pid, upstream_port, process_start_time(upstream_pid), "bench", os.devnull, 0)
    deployment = DeploymentRecord(endpoint.id, ENDPOINT, endpoint.revision, "bench", 1, [replica])
    StateFile(state_file_path(settings.data_dir)).save([deployment])


def _body() -> dict[str, Any]:
    return {"prompt": PROMPT, "max_new_tokens": MAX_NEW_TOKENS, "temperature": 0.0}


async def _in_parallel(count: int, concurrency: int, action: Any) -> list[Any]:
    results: list[Any] = [None] * count
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            results[index] = await action(index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def _baseline(client: httpx.AsyncClient, tasks: int, concurrency: int) -> tuple[dict[str, float], str]:
    params = {"model_endpoint_name": ENDPOINT}

    async def call(_index: int) -> tuple[float, str]:
        started = time.perf_counter()
        response = await client.post("/v1/llm/completions-sync", params=params, json=_body())
        response.raise_for_status()
        return time.perf_counter() - started, response.json()["output"]["text"]

    started = time.perf_counter()
    results = await _in_parallel(tasks, concurrency, call)
    elapsed = time.perf_counter() - started
    latencies = [latency for latency, _ in results]
    summary = {
        "p50_ms": 1000 * percentile(latencies, 0.5),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "calls_per_s": tasks / elapsed,
    }
    return summary, results[0][1]


def _done_at(meta: dict[str, Any]) -> float:
    done = meta["date_done"]
    moment = datetime.fromisoformat(done) if isinstance(done, str) else done
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())


async def _submit_all(client: httpx.AsyncClient, tasks: int, concurrency: int) -> list[tuple[str, float, float]]:
    """(task id, wall-clock start, submit latency) of ``tasks`` submits."""
    params = {"model_endpoint_name": ENDPOINT}

    async def submit(_index: int) -> tuple[str, float, float]:
        wall = time.time()
        started = time.perf_counter()
        response = await client.post("/v1/llm/completions-async", params=params, json=_body())
        response.raise_for_status()
        return response.json()["task_id"], wall, time.perf_counter() - started

    return await _in_parallel(tasks, concurrency, submit)


async def _verify(client: httpx.AsyncClient, task_ids: list[str], concurrency: int, expected: str) -> int:
    """How many of the tasks read back through the API as SUCCESS with the expected text."""

    async def verify(index: int) -> bool:
        body = (await client.get(f"/v1/async-tasks/{task_ids[index]}")).json()
        return bool(body["status"] == "SUCCESS" and body["result"]["output"]["text"] == expected)

    return sum(await _in_parallel(len(task_ids), concurrency, verify))


async def _latency_run(
    client: httpx.AsyncClient, celery_app: Any, tasks: int, concurrency: int, expected: str
) -> dict[str, Any]:
    """Closed loop: each of ``concurrency`` clients submits a task and waits for its result before submitting the
    next, so no queue builds up and the figure is the platform's own latency."""
    params = {"model_endpoint_name": ENDPOINT}

    async def round_trip(_index: int) -> tuple[str, float, float, dict[str, Any]]:
        wall = time.time()
        started = time.perf_counter()
        response = await client.post("/v1/llm/completions-async", params=params, json=_body())
        response.raise_for_status()
        submit_latency = time.perf_counter() - started
        task_id = response.json()["task_id"]
        while True:  # the latency comes from date_done: this polling only decides when to send the next task
            meta = await asyncio.to_thread(celery_app.backend.get_task_meta, task_id)
            if meta["status"] in ("SUCCESS", "FAILURE"):
                return task_id, wall, submit_latency, meta
            await asyncio.sleep(POLL_SECONDS)

    results = await _in_parallel(tasks, concurrency, round_trip)
    latencies = [_done_at(meta) - wall for _, wall, _, meta in results if meta["status"] == "SUCCESS"]
    succeeded = await _verify(client, [task_id for task_id, _, _, _ in results], concurrency, expected)
    return {
        "p50_ms": 1000 * percentile(latencies, 0.5) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else None,
        "submit_p50_ms": 1000 * percentile([latency for _, _, latency, _ in results], 0.5),
        "succeeded": succeeded,
        "lost": tasks - succeeded,
    }


async def _throughput_run(
    client: httpx.AsyncClient, celery_app: Any, workers: Workers, tasks: int, concurrency: int, expected: str
) -> dict[str, Any]:
    workers.stop()
    task_ids = [task_id for task_id, _, _ in await _submit_all(client, tasks, concurrency)]
    workers.start()
    metas = await asyncio.to_thread(_collect, celery_app, task_ids, 600.0)
    finished = sorted(_done_at(meta) for meta in metas.values() if meta["status"] == "SUCCESS")
    succeeded = await _verify(client, task_ids, concurrency, expected)
    span = finished[-1] - finished[0] if len(finished) > 1 else float("inf")
    return {"tasks_per_s": (len(finished) - 1) / span, "succeeded": succeeded, "lost": tasks - succeeded}


def _collect(celery_app: Any, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Result metadata of every task, waiting until each one is final (or the timeout)."""
    pending = set(task_ids)
    metas: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            meta = celery_app.backend.get_task_meta(task_id)
            if meta["status"] in ("SUCCESS", "FAILURE"):
                metas[task_id] = meta
                pending.discard(task_id)
        if pending:
            time.sleep(0.5)  # latency comes from date_done: polling often would only take CPU from the workers
    return metas


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


class Workers:
    """The worker processes of one run (``start_worker_process``, as ``model-engine serve`` starts them)."""

    def __init__(self, settings: Any, count: int, concurrency: int, log_dir: Path) -> None:
        self._settings, self._count, self._concurrency, self._log_dir = settings, count, concurrency, log_dir
        self.processes: list[subprocess.Popen[Any]] = []

    def start(self) -> None:
        from model_engine_server.tasks.worker import start_worker_process

        for index in range(self._count):
            log = self._log_dir / f"worker-{len(self.processes)}-{index}.log"
            process = start_worker_process(self._settings, concurrency=self._concurrency, log_file=log)
            self.processes.append(process)

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes.clear()


def run_broker(broker: str, args: argparse.Namespace) -> dict[str, Any]:
    from model_engine_server.config import AuthMode, Settings
    from model_engine_server.db.migrate import upgrade
    from model_engine_server.tasks.celery_app import create_celery_app
    from model_engine_server.tasks.worker import settings_environment

    prefix = f"llme-bench-{uuid.uuid4().hex[:10]}:"
    with tempfile.TemporaryDirectory(prefix="llme-async-bench-") as tmp:
        extra: dict[str, Any] = {"broker_url": REDIS_URL, "broker_key_prefix": prefix} if broker == "redis" else {}
        # One endpoint: its share of a worker's threads is all of them (the per-endpoint bound is for fairness between
        # endpoints, and would send this benchmark's extra tasks back to the queue for a second).
        settings = Settings(
            data_dir=Path(tmp),
            auth_mode=AuthMode.OPEN,
            async_endpoint_concurrency=args.worker_concurrency,
            **extra,
        )
        upgrade(settings.database_url)
        env = {key: value for key, value in os.environ.items() if not key.startswith("LLM_ENGINE_")}
        env.update(settings_environment(settings))
        upstream, upstream_url = spawn_listening(
            [sys.executable, "-m", "model_engine_server.testing.tgi", "--port", "0"], env
        )
        processes: list[subprocess.Popen[Any]] = [upstream]
        workers = Workers(settings, args.workers, args.worker_concurrency, Path(tmp))
        celery_app = create_celery_app(settings)
        try:
            asyncio.run(_register(settings, upstream.pid, int(upstream_url.rsplit(":", 1)[1])))
            gateway, gateway_url = spawn_listening(
                [sys.executable, "-m", "benchmarks.async_tasks", "--serve-gateway"],
                {**env, "BENCH_UPSTREAM": upstream_url},
            )
            processes.append(gateway)
            workers.start()
            return asyncio.run(_measure(gateway_url, celery_app, workers, args))
        finally:
            workers.stop()
            for process in reversed(processes):
                stop_process(process)
            celery_app.close()
            if broker == "redis":
                _delete_redis_prefix(prefix)


async def _measure(gateway_url: str, celery_app: Any, workers: Workers, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"x-api-key": OWNER_KEY}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, limits=limits, timeout=60) as client:
        # Warm up: the workers are up and consuming once a task comes back.
        warm = await client.post("/v1/llm/completions-async", params={"model_endpoint_name": ENDPOINT}, json=_body())
        warm.raise_for_status()
        await asyncio.to_thread(_collect, celery_app, [warm.json()["task_id"]], 120.0)
        await _baseline(client, min(200, args.tasks), args.concurrency)  # warm the gateway's pools
        print("  baseline (completions-sync, one at a time and concurrently) …", flush=True)
        sync, expected = await _baseline(client, args.tasks, 1)
        sync_concurrent, _ = await _baseline(client, args.tasks, args.concurrency)
        print("  latency (completions-async, one at a time, workers running) …", flush=True)
        latency = await _latency_run(client, celery_app, args.tasks, 1, expected)
        print("  throughput (a full queue, fresh workers) …", flush=True)
        throughput = await _throughput_run(client, celery_app, workers, args.tasks, args.concurrency, expected)
    added = latency["p50_ms"] - sync["p50_ms"] if latency["p50_ms"] is not None else None
    sync["calls_per_s"] = sync_concurrent["calls_per_s"]  # at --concurrency, for comparison with tasks/s
    return {
        "sync": sync,
        "async": {**latency, "tasks_per_s": throughput["tasks_per_s"], "lost": latency["lost"] + throughput["lost"]},
        "throughput_run": throughput,
        "added_p50_ms": added,
    }


def _table(results: dict[str, Any]) -> str:
    rows = [
        f"{'broker':<10} {'sync p50':>9} {'sync p99':>9} {'sync/s':>8} {'async p50':>10} {'async p99':>10} "
        f"{'added p50':>10} {'tasks/s':>8} {'lost':>5}"
    ]
    for broker, run in results["brokers"].items():
        s, a = run["sync"], run["async"]
        rows.append(
            f"{broker:<10} {s['p50_ms']:>7.1f}ms {s['p99_ms']:>7.1f}ms {s['calls_per_s']:>8.0f} "
            f"{a['p50_ms']:>8.1f}ms {a['p99_ms']:>8.1f}ms {run['added_p50_ms']:>8.1f}ms {a['tasks_per_s']:>8.0f} "
            f"{a['lost']:>5}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Async completions over Redis and the embedded broker.")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (throughput phases)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=16, help="task threads per worker process")
    parser.add_argument("--brokers", default="redis,embedded")
    parser.add_argument("--quick", action="store_true", help="200 tasks (a smoke run, noisier figures)")
    parser.add_argument("--serve-gateway", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        _serve_gateway()
        return
    if args.quick:
        args.tasks = 200
    results: dict[str, Any] = {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "worker_concurrency": args.worker_concurrency,
        "cpus": os.cpu_count(),
        "brokers": {},
    }
    for broker in args.brokers.split(","):
        print(f"{broker}:", flush=True)
        results["brokers"][broker] = run_broker(broker, args)
    redis_run = results["brokers"].get("redis")
    if redis_run is not None:
        results["targets"] = {
            **TARGETS,
            "met": redis_run["added_p50_ms"] <= TARGETS["redis_added_p50_ms"]
            and redis_run["async"]["tasks_per_s"] >= TARGETS["redis_tasks_per_s"]
            and redis_run["async"]["lost"] == 0,
        }
    print(_table(results))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
