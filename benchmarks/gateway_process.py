"""The gateway as benchmarks run it: the real app under uvicorn (uvloop, httptools) in its own process, with one
READY endpoint routed to a given inference server and the embedded SQLite registry. The process prints
``listening on <url>`` (see ``support.spawn_listening``)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import uvicorn

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from model_engine_server.db.migrate import upgrade
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ObservedState


class StaticResolver:
    """The benchmark's upstream resolver: every endpoint is routed to the given inference server."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream

    async def upstreams(self, _endpoint: Any) -> list[str]:
        return [self._upstream]


def serve_gateway(
    upstream: str,
    data_dir: Path,
    endpoint_name: str,
    auth_mode: str,
    *,
    owner: str = "bench-key",
    public: bool = False,
    per_worker: int = 10,
    **settings: Any,
) -> None:
    """Run the gateway until terminated; ``settings`` are further ``Settings`` fields."""
    config = Settings(data_dir=data_dir, auth_mode=AuthMode(auth_mode), **settings)
    upgrade(config.database_url)

    async def register() -> None:
        engine = create_engine(config.database_url)
        registry = EndpointRegistry(create_session_factory(engine))
        endpoint_config = EndpointConfig(model_name="smollm2-135m", public_inference=public, per_worker=per_worker)
        endpoint = await registry.create(owner=owner, name=endpoint_name, config=endpoint_config)
        await registry.record_observed(endpoint.id, endpoint.revision, ObservedState(EndpointStatus.READY, 1))
        await engine.dispose()

    asyncio.run(register())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections made before uvicorn has started wait in the backlog instead of being refused
    app = create_app(config, resolver=StaticResolver(upstream))
    server_config = uvicorn.Config(
        app, loop="uvloop", http="httptools", access_log=False, log_level="warning", lifespan="on", backlog=4096
    )
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(server_config).run(sockets=[sock])
