"""A tiny TGI-protocol server whose behaviour a test controls, for exercising process supervision.

Started exactly like ``text-generation-launcher`` (``--model-id X --port P --hostname H``). ``--model-id`` names a JSON
file read at start-up, so a test can change how the *next* start behaves (a bare name such as ``smollm2-135m`` just
serves; a path that does not exist fails like a missing model):

    {"startup_seconds": 0.2,            # /health answers 503 until then, 200 after
     "fail": "CUDA out of memory",      # print this to stderr and exit 1 instead of serving
     "ignore_sigterm": false,           # only SIGKILL stops it
     "spawn_child": false}              # start a helper process in our group (like TGI's shards); pid -> <file>.child

Standard library only, so it starts in a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hostname", default="127.0.0.1")
    args, _ = parser.parse_known_args()
    control_path = Path(args.model_id)
    try:
        control: dict[str, Any] = json.loads(control_path.read_text())
    except FileNotFoundError:
        if "/" in args.model_id:
            sys.stderr.write(f"error: model {args.model_id!r} not found\n")
            sys.exit(2)
        control = {}  # a bare model name (e.g. the demo model's): serve at once
    sys.stdout.write(f"fake TGI server: model {args.model_id}, port {args.port}\n")
    sys.stdout.flush()
    if control.get("fail"):
        sys.stderr.write(f"loading the model failed\nRuntimeError: {control['fail']}\n")
        sys.exit(1)
    if control.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if control.get("spawn_child"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        control_path.with_suffix(".child").write_text(str(child.pid))
    ready_at = time.monotonic() + float(control.get("startup_seconds", 0.0))

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                ready = time.monotonic() >= ready_at
                self._send(200 if ready else 503, {} if ready else {"error": "loading"})
            elif self.path == "/info":
                self._send(200, {"model_id": args.model_id, "max_input_tokens": 1024, "max_total_tokens": 2048})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            request = json.loads(self.rfile.read(length) or b"{}")
            tokens = int(request.get("parameters", {}).get("max_new_tokens", 1))
            self._send(200, {"generated_text": " fake" * tokens})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer((args.hostname, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
