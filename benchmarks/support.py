"""Helpers every benchmark shares: percentiles and the child processes it measures."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values, so an empty phase cannot pass a target."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def spawn_listening(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start a process that prints ``listening on <url>`` when ready; returns it and the URL. With ``log``, its
    stderr goes to that file (nobody has to read a pipe for a long-running, talkative process)."""
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("w")) if log is not None else subprocess.PIPE
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env or os.environ.copy()
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening on "):
        process.kill()
        process.wait()
        errors = log.read_text() if log is not None else process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"{args[:4]} failed to start: {line}{errors}")
    return process, line.split()[-1]


def close_pipes(process: subprocess.Popen[str]) -> None:
    """Close the pipes ``spawn_listening`` opened (after the process has stopped)."""
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
