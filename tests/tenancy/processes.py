"""Processes the tenancy tests run: gateways (`model-engine gateway`) and a private ``redis-server`` on a free port
that a test may stop (never the shared one on 6379)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from model_engine_server.orchestration.local.processes import free_port
from model_engine_server.testing.platform import stop_process, wait_healthy


@contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(url, process); stop the process to take Redis down."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.02)
    try:
        yield url, process
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def start_gateways(count: int, env: dict[str, str]) -> Iterator[list[str]]:
    """``count`` `model-engine gateway` processes on one registry (as replicas behind a Service); yields their URLs."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    for _ in range(count):
        port = free_port()
        command = [sys.executable, "-m", "model_engine_server", "gateway", "--port", str(port)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(f"{url}/healthz", process, timeout=60, interval=0.1)
        yield urls
    finally:
        for process in processes:
            stop_process(process, timeout=30)
