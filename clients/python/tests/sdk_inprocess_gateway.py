"""The gateway app on a real socket with instant TGI-protocol upstreams, on an event loop in a thread of its own.

Completions need an endpoint that is READY and routed to an inference server. Here the gateway is the real app
(routes, registry on SQLite, upstream proxy, SSE) and the upstreams are the instant TGI server from
``benchmarks/``; only the orchestrator is the platform's test double, told which upstreams an endpoint has (the
helpers of ``tests/api/completion_support.py``). Running it in a background thread lets blocking SDK calls — and
an async test's own event loop — talk to it like to any remote gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from llmengine import api_engine

from model_engine_server.config import AuthMode, Settings
from model_engine_server.db.migrate import upgrade
from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import RunningGateway, running_gateway

T = TypeVar("T")


class BackgroundGateway:
    def __init__(self, data_dir: Path) -> None:
        database = data_dir / "registry.db"
        upgrade(f"sqlite+aiosqlite:///{database}")
        self.settings = Settings(
            database_url=f"sqlite+aiosqlite:///{database}", data_dir=data_dir, auth_mode=AuthMode.OPEN
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sdk-test-gateway", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.gateway: RunningGateway
        self.tgi: InstantTgiServer  # answers at once
        self.slow_tgi: InstantTgiServer  # one token every 20 ms: time to walk away mid-stream
        self.failing_tgi: InstantTgiServer  # streams fail after two tokens with TGI's in-band error

    @property
    def url(self) -> str:
        return self.gateway.url

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._open())

    async def _open(self) -> None:
        self.gateway = await self._stack.enter_async_context(running_gateway(self.settings))
        self.tgi = await self._stack.enter_async_context(running_instant_tgi(record=True))
        self.slow_tgi = await self._stack.enter_async_context(running_instant_tgi(token_delay=0.02))
        self.failing_tgi = await self._stack.enter_async_context(running_instant_tgi(fail_after=2))

    def stop(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def new_endpoint(self, upstream: str = "tgi") -> str:
        """A READY endpoint of the SDK's current key, served by the named instant server; returns its new name."""
        name = f"llm-{uuid.uuid4().hex[:8]}"
        self.add_endpoint(name, api_engine.get_api_key(), getattr(self, upstream))
        return name

    def add_endpoint(
        self,
        name: str,
        api_key: str,
        upstream: InstantTgiServer | None,
        status: EndpointStatus = EndpointStatus.READY,
        reason: str | None = None,
    ) -> None:
        """Create the endpoint through the gateway's API as ``api_key``, then mark it as an orchestrator would."""
        upstreams = [upstream.url] if upstream is not None else []
        self.run(self.gateway.add_endpoint(name, upstreams, owner=(api_key, ""), status=status, reason=reason))
