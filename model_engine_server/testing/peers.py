"""The separate virtual environment with the third-party clients we must stay compatible with.

HF's ``text-generation`` client and the published ``scale-llm-engine`` SDK pin dependencies that conflict with
transformers 5, so they live in ``.venv-peers``. ``make peers`` (a prerequisite of ``make test``) builds it from
``peer-requirements.txt`` — the one list of peer packages — and records that list in the venv; tests only use it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).with_name("peer-requirements.txt")
PEER_VENV = Path(__file__).resolve().parents[2] / ".venv-peers"  # at the repository root, where `make peers` builds it
STAMP = PEER_VENV / "requirements.txt"  # the requirements it was built from


def peer_python() -> Path:
    """The peer venv's interpreter; skips the test when the venv is missing or built from another list."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists() or not STAMP.exists() or STAMP.read_text() != REQUIREMENTS.read_text():
        pytest.skip("the peer clients' venv is missing or out of date: run `make peers`")
    return python


def run_peer_script(script: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the peer interpreter in isolated mode (never our own packages from the working directory)."""
    return subprocess.run(
        [str(peer_python()), "-I", "-c", script], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
