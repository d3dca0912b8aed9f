"""A separate virtual environment with the third-party clients we must stay compatible with.

HF's ``text-generation`` client, the published ``scale-llm-engine`` SDK and the ``openai`` SDK pin dependencies that
conflict with transformers 5, so they live in their own venv (``.venv-peers``), built once per machine and reused.
``openai`` is the newest release the published client allows (it requires ``openai>=1.30,<2``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER_PACKAGES = ("text-generation==0.7.0", "scale-llm-engine==0.0.0b45", "openai==1.109.1")
PEER_VENV = Path(__file__).resolve().parent.parent / ".venv-peers"


def peer_python() -> Path:
    """The peer venv's interpreter, creating the venv and installing the pinned clients on first use."""
    python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / "installed.txt"
    wanted = "\n".join(PEER_PACKAGES)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    stamp.write_text(wanted)
    return python


def run_peer_script(script: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with the peer interpreter; the caller asserts on its exit code and output."""
    return subprocess.run(
        [str(peer_python()), "-c", script], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
