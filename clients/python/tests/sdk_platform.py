"""The real platform for the SDK's end-to-end tests: ``model-engine`` processes on free loopback ports.

Each platform gets its own data directory (SQLite registry, logs), is migrated with ``model-engine migrate`` like a
real installation, and is stopped (SIGTERM, then SIGKILL) when the test session is done with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

MODEL_ENGINE = str(Path(sys.executable).parent / "model-engine")
START_TIMEOUT = 60.0


@dataclass
class Platform:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    api_key: str | None = None  # in keys mode, the key the platform was started with

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def poll_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for ``condition`` to hold, checking every 10 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def platform_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without any LLM_ENGINE_ setting of its own, plus ``settings`` (names without prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ENGINE_") and k != "SCALE_API_KEY"}
    env["LLM_ENGINE_DATA_DIR"] = str(data_dir)
    env.update({f"LLM_ENGINE_{name.upper()}": value for name, value in settings.items()})
    return env


def start_platform(command: str, data_dir: Path, **settings: str) -> Platform:
    """Run ``model-engine <command>`` (``gateway`` or ``serve``) and wait until ``/healthz`` answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = platform_env(data_dir, **settings)
    subprocess.run([MODEL_ENGINE, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    log = data_dir / f"{command}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [MODEL_ENGINE, command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    platform = Platform(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"model-engine {command} exited with {process.returncode}:\n{platform.log_tail()}")
        try:
            if httpx.get(f"{platform.url}/healthz", timeout=1.0).status_code == 200:
                return platform
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    platform.stop()
    raise RuntimeError(f"model-engine {command} did not answer /healthz in {START_TIMEOUT}s:\n{platform.log_tail()}")
