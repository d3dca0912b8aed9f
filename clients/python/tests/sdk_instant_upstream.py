"""The instant TGI server, started the way the local orchestrator starts an inference server.

``LLM_ENGINE_INFERENCE_SERVER_COMMAND="python .../sdk_instant_upstream.py"`` makes ``model-engine serve`` run this
for every replica with ``--model-id M --port P --hostname H``; it answers at once with the deterministic words of
``benchmarks/instant_tgi.py``, so end-to-end tests need no model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, for `benchmarks`

from benchmarks.instant_tgi import InstantTgiServer


async def serve(host: str, port: int) -> None:
    server = InstantTgiServer(host=host, port=port)
    await server.start()
    sys.stdout.write(f"listening on {server.url}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-id", default="instant")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hostname", default="127.0.0.1")
    options, _ = parser.parse_known_args()  # launcher flags this stand-in has no use for are ignored
    asyncio.run(serve(options.hostname, options.port))


if __name__ == "__main__":
    main()
