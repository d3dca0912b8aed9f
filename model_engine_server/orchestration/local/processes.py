"""Operating-system helpers for replica processes: free ports, process identity, signals and log tails.

Replicas run in their own session (so their process group id is their pid): signals reach the whole group, which
covers servers that fork workers (TGI's launcher starts one shard process per GPU).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces; fields after it split cleanly.
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot): with the pid it identifies one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def process_alive(pid: int, start_time: int | None) -> bool:
    """Whether the process recorded as (pid, start_time) still runs (a reused pid or a zombie does not count)."""
    fields = _stat_fields(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no procfs (not Linux): the pid's existence is all we can check
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in process group ``pgid``."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue  # exited while we looked
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def log_tail(path: Path, offset: int, lines: int, max_chars: int) -> str:
    """The last non-empty lines a replica wrote since ``offset``, joined with `` | `` for a one-line reason."""
    try:
        with path.open("rb") as log:
            log.seek(max(offset, os.path.getsize(path) - 64 * 1024))
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    joined = " | ".join(tail)
    return joined if len(joined) <= max_chars else "…" + joined[-max_chars:]


# In every replica's environment: the state file of the orchestrator that started it.
LAUNCHED_BY = "LLM_ENGINE_LAUNCHED_BY"


def launched_by(state_file: Path) -> set[int]:
    """Live replicas whose environment says this orchestrator's state file launched them (found in /proc)."""
    marker = f"{LAUNCHED_BY}={state_file}".encode()
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.add(int(environ.parent.name))
        except (OSError, ValueError):
            continue  # exited while we looked, or not ours to read
    return found
