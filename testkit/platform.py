"""The real platform under test: ``model-engine`` processes on free loopback ports, started as a user would.

``platform_env`` is the one way to build their environment: the caller's, minus every ``LLM_ENGINE_*`` setting and
``SCALE_API_KEY`` (so a developer's shell cannot leak into a test), plus the settings the test names.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from testkit.polling import eventually
from testkit.ports import free_port


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


@dataclass
class Platform:
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
        """Send ``sig`` and wait; SIGKILL if it does not stop in time. The exit code, None if it had to be killed."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            return None


def start_platform(
    command: str, data_dir: Path, *, migrate: bool = True, timeout: float = 60.0, **settings: str
) -> Platform:
    """Run ``model-engine <command>`` (``gateway`` or ``serve``) and wait until ``/healthz`` answers.

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
            [*model_engine_command(), command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
        )
    platform = Platform(f"http://127.0.0.1:{port}", process, log, data_dir)

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"model-engine {command} exited with {process.returncode}:\n{platform.log_tail()}")
        try:
            return httpx.get(f"{platform.url}/healthz", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    try:
        eventually(healthy, timeout=timeout, interval=0.1, what=lambda: f"/healthz\n{platform.log_tail()}")
    except BaseException:
        platform.stop()
        raise
    return platform
