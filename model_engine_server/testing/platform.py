"""The real platform under test: ``model-engine`` processes on free loopback ports, started as a user would.

``platform_env`` is the one way to build their environment: the caller's, minus every ``LLM_ENGINE_*`` setting and
``SCALE_API_KEY`` (so a developer's shell cannot leak into a test), plus the settings the test names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.testing.polling import eventually
from model_engine_server.testing.ports import free_port


def require_server() -> None:
    """Skip the calling test (or fixture) when the server package is not installed, e.g. in an SDK-only venv."""
    if importlib.util.find_spec("model_engine_server") is None:
        pytest.skip("needs the model_engine_server package (pip install -e . at the repository root)")


def model_engine_command() -> list[str]:
    """The ``model-engine`` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("model-engine")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from model_engine_server.cli import app; app(prog_name='model-engine')"]


def platform_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without its LLM Engine settings, plus ``settings`` (names without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ENGINE_") and k != "SCALE_API_KEY"}
    env["LLM_ENGINE_DATA_DIR"] = str(data_dir)
    env.update({f"LLM_ENGINE_{name.upper()}": value for name, value in settings.items()})
    return env


def builtin_server_command(model_id: str, port: int, *flags: str) -> list[str]:
    """The built-in inference server (``python -m model_engine_server.inference.server``) on 127.0.0.1:``port``."""
    server = "model_engine_server.inference.server"
    return [
        sys.executable,
        "-m",
        server,
        "--model-id",
        model_id,
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]


@dataclass
class BuiltinServer:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def wait_healthy(self, timeout: float = 300.0) -> None:
        wait_healthy(f"{self.url}/health", self.process, timeout=timeout, output=lambda: self.log.read_text()[-3000:])


@contextlib.contextmanager
def running_builtin_server(
    log: Path, *flags: str, model_id: str = "smollm2-135m", threads: int | None = None
) -> Iterator[BuiltinServer]:
    """The built-in inference server on a free port, output to ``log``; stopped when the block ends.

    It may still be loading its model when the block starts: call ``wait_healthy()`` before sending requests.
    ``threads`` caps its CPU threads (one keeps a test from starving the rest of a shared machine).
    """
    port = free_port()
    command = builtin_server_command(model_id, port, *flags)
    env = dict(os.environ)
    if threads is not None:
        command += ["--num-threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        yield BuiltinServer(f"http://127.0.0.1:{port}", port, process, log)
    finally:
        stop_process(process, timeout=30)


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    *,
    timeout: float,
    output: Callable[[], str] = str,
    interval: float = 0.25,
) -> None:
    """Wait until ``url`` answers 200; fail at once (with ``output()``) if ``process`` exits first."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{output()}")
        try:
            return httpx.get(url, timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, timeout=timeout, interval=interval, what=lambda: f"{url} to answer 200\n{output()}")


def stop_process(
    process: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0
) -> int | None:
    """Send ``sig`` and wait; SIGKILL if it does not stop in time. The exit code, None if it had to be killed."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


@dataclass
class Platform:
    """A ``model-engine`` process this test session started (``start_platform``, ``running_platform``)."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    data_dir: Path
    api_key: str | None = None  # in keys mode, the key the platform was started with

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        return stop_process(self.process, sig, timeout)


@contextlib.contextmanager
def running_platform(command: str, data_dir: Path, **options: Any) -> Iterator[Platform]:
    """``start_platform`` for a ``with`` block (or a fixture): stopped however the block ends."""
    platform = start_platform(command, data_dir, **options)
    try:
        yield platform
    finally:
        platform.stop()


def inference_servers(data_dir: str | Path, command_part: str, endpoint: str | None = None) -> set[int]:
    """Pids of the inference servers a platform with ``data_dir`` started whose command line contains
    ``command_part`` (found in /proc: they outlive a killed parent), only those of ``endpoint`` when given (their
    output goes to ``logs/endpoints/<endpoint>/``)."""
    marker = f"LLM_ENGINE_DATA_DIR={data_dir}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if command_part.encode() not in (entry / "cmdline").read_bytes():
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if endpoint is not None and f"/endpoints/{endpoint}/" not in os.readlink(entry / "fd" / "1"):
                continue
        except OSError:
            continue
        found.add(int(entry.name))
    return found


def start_platform(
    command: str,
    data_dir: Path,
    *,
    migrate: bool = True,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    **settings: str,
) -> Platform:
    """Run ``model-engine <command> [extra_args]`` (``gateway`` or ``serve``) and wait until ``/healthz`` answers.

    ``migrate`` runs ``model-engine migrate`` first, like a real installation (``serve`` migrates by itself).
    """
    require_server()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = platform_env(data_dir, **settings)
    if migrate:
        subprocess.run([*model_engine_command(), "migrate"], env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    log = data_dir / f"{command}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*model_engine_command(), command, *extra_args, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
    platform = Platform(f"http://127.0.0.1:{port}", process, log, data_dir)
    try:
        wait_healthy(f"{platform.url}/healthz", process, timeout=timeout, output=platform.log_tail, interval=0.1)
    except BaseException:
        platform.stop()
        raise
    return platform
