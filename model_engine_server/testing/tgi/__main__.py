"""The instant TGI server as a process, started like ``text-generation-launcher``.

    python -m model_engine_server.testing.tgi --port 0    # prints "listening on http://127.0.0.1:<port>"

As an inference-server command
(``LLM_ENGINE_INFERENCE_SERVER_COMMAND="python -m model_engine_server.testing.tgi"``) it takes the launcher's
``--model-id M --port P --hostname H`` (other flags are ignored). A bare model id just serves; a model id that is a
path names a JSON control file, read at start-up, so a test can decide how the *next* start behaves:

    {"startup_seconds": 0.2,            # /health answers 503 until then, 200 after
     "ready_file": "/tmp/go",           # ... and until this file exists (a test decides when the replica is ready)
     "fail": "CUDA out of memory",      # print this to stderr and exit 1 instead of serving
     "ignore_sigterm": false,           # only SIGKILL stops it
     "spawn_child": false}              # start a helper process in our group (like TGI's shards); pid -> <file>.child

A path that does not exist fails like a missing model (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from model_engine_server.testing.tgi.server import InstantTgiServer


def _control(model_id: str) -> dict[str, Any]:
    if "/" not in model_id:
        return {}
    path = Path(model_id)
    if not path.exists():
        sys.stderr.write(f"error: model {model_id!r} not found\n")
        sys.exit(2)
    control: dict[str, Any] = json.loads(path.read_text())
    if control.get("fail"):
        sys.stderr.write(f"loading the model failed\nRuntimeError: {control['fail']}\n")
        sys.exit(1)
    if control.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if control.get("spawn_child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        path.with_suffix(".child").write_text(str(child.pid))
    return control


async def _ready_when_exists(server: InstantTgiServer, path: Path, ready_at: float) -> None:
    while not path.exists():
        await asyncio.sleep(0.05)
    server.ready_at = ready_at


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The instant TGI server.")
    parser.add_argument("--host", "--hostname", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model-id", default="instant-tgi", help="a name, or the path of a JSON control file")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--fail-after", type=int, default=None, help="streams fail after this many tokens")
    parser.add_argument("--eos-after", type=int, default=None, help="end with </s> after this many tokens")
    parser.add_argument("--max-concurrent", type=int, default=None, help="answer 429 beyond this many requests")
    args, _ = parser.parse_known_args(argv)  # other launcher flags mean nothing to a stand-in
    control = _control(args.model_id)

    async def serve() -> None:
        ready_at = time.monotonic() + float(control.get("startup_seconds", 0.0))
        server = InstantTgiServer(**vars(args), ready_at=ready_at)  # the flags are named after its fields
        readiness = None  # referenced while serving (the loop keeps only weak references to tasks)
        if control.get("ready_file"):
            server.ready_at = float("inf")
            readiness = asyncio.create_task(_ready_when_exists(server, Path(control["ready_file"]), ready_at))
        await server.start()
        sys.stdout.write(f"listening on {server.url}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()
        del readiness

    try:
        import uvloop

        uvloop.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
