"""A read-only view of the local orchestrator's replicas for other processes (the async worker).

The orchestrator runs inside ``model-engine serve``; a worker process cannot ask it, so it reads the state file the
orchestrator rewrites after every change. Replicas whose process is gone are left out; a replica that is still
starting refuses connections, and the upstream client then tries the next one.
"""

from __future__ import annotations

import time
from pathlib import Path

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

    def upstreams(self, endpoint_id: str) -> list[str]:
        """Base URLs of the live replicas serving ``endpoint_id`` (current generation first)."""
        now = time.monotonic()
        if now - self._loaded_at >= self._cache_seconds:
            self._urls = self._read()
            self._loaded_at = now
        return list(self._urls.get(endpoint_id, []))

    def _read(self) -> dict[str, list[str]]:
        urls: dict[str, list[str]] = {}
        for deployment in self._state.load():
            live = [r for r in deployment.replicas if process_alive(r.pid, r.start_time)]
            live.sort(key=lambda r: r.launch_key != deployment.launch_key)
            urls[deployment.endpoint_id] = [f"http://127.0.0.1:{r.port}" for r in live]
        return urls
