"""``python -m model_engine_server.inference.server --model-id ... --port ...``"""

from __future__ import annotations

import typer

from model_engine_server.inference.server.cli import inference_server


def main() -> None:
    typer.run(inference_server)


if __name__ == "__main__":
    main()
