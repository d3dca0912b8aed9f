"""Real ``model-engine`` processes for tests that need them as a user runs them: the gateway on a free port, its
log in a file, stopped with SIGTERM (or killed, when the test is about that)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from model_engine_server.testing import free_port

MODEL_ENGINE = str(Path(sys.executable).parent / "model-engine")


def poll_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for ``condition`` (checked every 20 ms); returns the seconds it took, fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - started


def engine_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This environment without any LLM_ENGINE_ setting of its own, plus ``settings`` (names without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ENGINE_")}
    env["LLM_ENGINE_DATA_DIR"] = str(data_dir)
    env.update({f"LLM_ENGINE_{name.upper()}": value for name, value in settings.items()})
    return env


@dataclass
class EngineProcess:
    """One ``model-engine <command>`` process; ``restart`` starts the same command again on the same port."""

    command: list[str]
    env: dict[str, str]
    log: Path
    url: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, ready_path: str | None = "/healthz", timeout: float = 60) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=output, stderr=subprocess.STDOUT)
        if ready_path is not None:
            poll_until(self._answers(ready_path), timeout, f"{self.command[1]} answering {ready_path}")

    def _answers(self, path: str) -> Callable[[], bool]:
        def check() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.command[1]} exited {self.process.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(self.url + path, timeout=1).status_code < 500
            except httpx.TransportError:
                return False

        return check

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, like a crashed node."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def migrate(env: dict[str, str]) -> None:
    subprocess.run([MODEL_ENGINE, "migrate"], env=env, check=True, capture_output=True, timeout=120)


def gateway_process(data_dir: Path, **settings: str) -> EngineProcess:
    """``model-engine gateway`` on a free loopback port, migrated first (not yet started)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = engine_env(data_dir, **settings)
    migrate(env)
    port = free_port()
    command = [MODEL_ENGINE, "gateway", "--host", "127.0.0.1", "--port", str(port)]
    return EngineProcess(command, env, data_dir / "gateway.log", url=f"http://127.0.0.1:{port}")
