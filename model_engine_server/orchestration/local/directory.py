"""Where requests go when the local orchestrator runs in another process (the async worker; a gateway beside
``model-engine orchestrator``): the ``UpstreamResolver`` over the state file it rewrites after every change.

The same answer the orchestrator gives in its own process: replicas that were ready at the last write and whose
process still runs, current generation first.
"""

from __future__ import annotations

import time
from pathlib import Path

from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.orchestration.local.processes import process_alive
from model_engine_server.orchestration.local.state import StateFile

STATE_CACHE_SECONDS = 0.5


def state_file_path(data_dir: Path) -> Path:
    """Where ``LocalOrchestrator`` keeps its state for ``data_dir``."""
    return data_dir / "local-orchestrator" / "state.json"


class LocalReplicaDirectory:
    def __init__(self, data_dir: Path, *, cache_seconds: float = STATE_CACHE_SECONDS) -> None:
        self._state = StateFile(state_file_path(data_dir))
        self._cache_seconds = cache_seconds
        self._loaded_at = -float("inf")
        self._urls: dict[str, list[str]] = {}

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        now = time.monotonic()
        stale = now - self._loaded_at >= self._cache_seconds
        # No replica in a cached answer is read again at once: the registry may already call the endpoint ready
        # (the orchestrator writes this file first), and a request must not get a 503 for the cache's age.
        if stale or not self._urls.get(endpoint.id):
            self._urls = self._read()
            self._loaded_at = now
        return list(self._urls.get(endpoint.id, []))

    def _read(self) -> dict[str, list[str]]:
        urls: dict[str, list[str]] = {}
        for deployment in self._state.load():
            live = [r for r in deployment.replicas if r.ready and process_alive(r.pid, r.start_time)]
            live.sort(key=lambda r: r.launch_key != deployment.launch_key)
            urls[deployment.endpoint_id] = [f"http://127.0.0.1:{r.port}" for r in live]
        return urls
