"""An async-completion worker (``model-engine worker``'s Celery worker) whose endpoints all answer at one URL.

The in-process gateway of these tests has no local orchestrator whose state file a worker could read, so this
worker is told the upstream directly: ``python sdk_async_worker.py DATA_DIR DATABASE_URL UPSTREAM_URL``. Broker and
result backend are the embedded defaults under DATA_DIR, shared with the gateway.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from model_engine_server.config import AuthMode, Settings
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.tasks.worker import run_worker


class StaticResolver:
    def __init__(self, url: str) -> None:
        self._url = url

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        del endpoint  # every endpoint of these tests is served by the same instant server
        return [self._url]


def main() -> None:
    data_dir, database_url, upstream = sys.argv[1:4]
    settings = Settings(data_dir=Path(data_dir), database_url=database_url, auth_mode=AuthMode.OPEN)
    run_worker(settings, concurrency=4, resolver=StaticResolver(upstream))


if __name__ == "__main__":
    main()
