"""Supervising child processes: start one in its own process group with its output appended to a log file, stop it
(SIGTERM, a grace period, SIGKILL, until the whole group is gone), and keep a helper process running.

Shared by the local orchestrator (inference-server replicas) and ``model-engine serve`` (the async worker).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from model_engine_server.orchestration.local.processes import group_alive, signal_group

log = logging.getLogger(__name__)

_GROUP_EXIT_SECONDS = 5.0  # SIGKILLed processes vanish within milliseconds; this bounds a stuck kernel


class ProcessStartError(Exception):
    """The process could not be started: ``reason`` says why; the log has it from ``log_offset`` on."""

    def __init__(self, reason: str, log_offset: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_offset = log_offset


async def start_process(
    argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None, banner: str | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``argv`` in a new session (its process group id is its pid, and Ctrl-C in our terminal does not reach
    it), output appended to ``log_path`` after an optional ``banner`` line. Returns the process and the offset in
    the log where its own output starts. Raises ``ProcessStartError`` when it cannot be started."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        if banner is not None:
            output.write(f"\n{banner}\n".encode())
            output.flush()
        offset = output.tell()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            output.write(f"could not start {argv[0]}: {exc}\n".encode())
            raise ProcessStartError(exc.strerror or str(exc), offset) from exc
    return process, offset


async def stop_process_group(
    pid: int, wait_exit: Callable[[], Awaitable[object]], grace_seconds: float, what: str
) -> None:
    """SIGTERM the group led by ``pid`` so in-flight work can finish, SIGKILL it after ``grace_seconds``; return once
    every process of the group is gone (ports and memory released, not just signalled). ``wait_exit`` returns when
    the leader has exited."""
    signal_group(pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace_seconds):
            await wait_exit()
    except TimeoutError:
        log.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", what, pid, grace_seconds)
        signal_group(pid, signal.SIGKILL)
        await wait_exit()
    signal_group(pid, signal.SIGKILL)  # children the leader left behind in its process group
    deadline = time.monotonic() + _GROUP_EXIT_SECONDS
    while group_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


class KeptRunning:
    """A helper process (``serve``'s async worker) restarted whenever it exits, until ``stop``."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, *, restart_delay: float, stop_grace: float
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._restart_delay = restart_delay
        self._stop_grace = stop_grace
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name=f"child-{self.name}")

    async def _keep_running(self) -> None:
        while not self._stopping:
            self._process, _ = await start_process(self.argv, self.log_path)
            code = await self._process.wait()
            if self._stopping:
                return
            log.warning(
                "The %s exited with code %s (log: %s); restarting in %.0fs",
                self.name,
                code,
                self.log_path,
                self._restart_delay,
            )
            await asyncio.sleep(self._restart_delay)

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            await stop_process_group(process.pid, process.wait, self._stop_grace, f"The {self.name}")
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
