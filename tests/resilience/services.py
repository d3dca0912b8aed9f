"""Private PostgreSQL and Redis servers on free ports, so a test can stop and restart them without touching the
machine's shared instances. PostgreSQL refuses to run as root: its commands run as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port, poll_until


def _as_postgres(args: list[str]) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed under /usr/lib/postgresql")
    return found[-1]


@dataclass
class PrivatePostgres:
    directory: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.port = free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.directory, "postgres", "postgres")
        data = str(self.directory / "data")
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [_pg_bin("pg_ctl"), "-D", str(self.directory / "data"), "-l", str(self.directory / "log"), "-w"]
                + ["-o", options, "start"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session (like a restart or a failover); ``immediate`` is a crash."""
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.directory / "data"), "-m", mode, "-w", "stop"]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def psql(self, sql: str) -> str:
        result = subprocess.run(
            _as_postgres([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-At", "-c", sql]),
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.strip()


@dataclass
class PrivateRedis:
    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or start again, on the same port with the same append-only file: queued tasks survive)."""
        if not self.port:
            self.port = free_port()
            self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
            + ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(self._answers, 30, "redis answering PING")

    def _answers(self) -> bool:
        ping = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=5, check=False
        )
        return ping.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # Redis flushes its append-only file and exits
            self.process.wait(timeout=30)
