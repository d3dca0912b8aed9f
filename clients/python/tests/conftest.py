"""Fixtures for the SDK's tests: configuration reset between tests, a scripted HTTP server, and real gateways.

The SDK's own tests (transport, requests, responses, SSE) need only the SDK. The rest run against the platform and
use the shared test kit (``model_engine_server.testing``, installed with the server): without it they are not
collected.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from llmengine import RetryPolicy, _transport, api_engine
from sdk_scripted_server import ScriptedServer

if TYPE_CHECKING:
    from sdk_inprocess_gateway import BackgroundGateway

    from model_engine_server.testing.platform import Platform

# The parent first: find_spec of a submodule raises when its package is missing.
_PLATFORM_AVAILABLE = all(
    importlib.util.find_spec(name) for name in ("model_engine_server", "model_engine_server.testing")
)
_PLATFORM_TESTS = [
    "sdk_async_worker.py",
    "sdk_inprocess_gateway.py",
    "test_sdk_api_compat.py",
    "test_sdk_async_tasks.py",
    "test_sdk_auth.py",
    "test_sdk_completions.py",
    "test_sdk_files_and_batches.py",
    "test_sdk_fine_tunes.py",
    "test_sdk_gateway.py",
    "test_sdk_peer_client.py",
    "test_sdk_serve.py",
]
collect_ignore = [] if _PLATFORM_AVAILABLE else _PLATFORM_TESTS

# Retries keep their shape but not their patience: tests must not wait for production backoff.
FAST_RETRIES = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


@pytest.fixture(autouse=True)
async def sdk_config(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Every test starts from the environment alone and leaves no pooled connection behind (sync or async)."""
    monkeypatch.delenv("LLM_ENGINE_BASE_PATH", raising=False)
    monkeypatch.delenv("SCALE_API_KEY", raising=False)
    api_engine.set_base_path(None)
    api_engine.set_api_key(None)
    api_engine.set_retry_policy(FAST_RETRIES)
    yield
    api_engine.set_base_path(None)
    api_engine.set_api_key(None)
    api_engine.set_retry_policy(RetryPolicy())
    api_engine.set_http_client(None)
    api_engine.set_async_http_client(None)
    await _transport.aclose_connections()
    _transport.close_connections()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.start()
    api_engine.set_base_path(server.url)
    try:
        yield server
    finally:
        _transport.close_connections()
        server.stop()


@pytest.fixture(scope="session")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """``model-engine gateway`` with open auth and a SQLite registry, shared by the tests that need it."""
    from model_engine_server.testing.platform import running_platform

    with running_platform("gateway", tmp_path_factory.mktemp("gateway"), auth_mode="open") as platform:
        yield platform


def _as_new_tenant(url: str) -> None:
    """Point the SDK at ``url`` with a key of its own (open auth: every key is its own tenant)."""
    api_engine.set_base_path(url)
    api_engine.set_api_key(f"tenant-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def gateway(gateway_process: Platform) -> Platform:
    """The SDK pointed at the gateway process as a tenant of its own."""
    _as_new_tenant(gateway_process.url)
    return gateway_process


@pytest.fixture(scope="session")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """``model-engine gateway`` in keys mode: only its ``api_key`` (owner ``sdk-tests``) is accepted."""
    from model_engine_server.testing.platform import running_platform

    key = f"sk-sdk-tests-{uuid.uuid4().hex}"
    directory = tmp_path_factory.mktemp("keyed-gateway")
    options = {"auth_mode": "keys", "bootstrap_api_key": key, "bootstrap_owner": "sdk-tests"}
    with running_platform("gateway", directory, **options) as platform:
        platform.api_key = key
        yield platform


@pytest.fixture(scope="session")
def inprocess_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundGateway]:
    """The gateway app with READY endpoints routed to instant TGI servers (see ``sdk_inprocess_gateway``)."""
    from sdk_inprocess_gateway import BackgroundGateway

    from model_engine_server.testing.serving import running

    with running(BackgroundGateway(tmp_path_factory.mktemp("inprocess-gateway"))) as gateway:
        yield gateway


@pytest.fixture
def completions(inprocess_gateway: BackgroundGateway) -> BackgroundGateway:
    """The SDK pointed at the in-process gateway as a tenant of its own."""
    _as_new_tenant(inprocess_gateway.url)
    return inprocess_gateway


@pytest.fixture(scope="session")
def async_worker(inprocess_gateway: BackgroundGateway) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker for the in-process gateway's queues, sending every task to its instant TGI server."""
    settings = inprocess_gateway.settings
    log = settings.data_dir / "worker.log"
    from model_engine_server.testing.platform import stop_process

    script = Path(__file__).with_name("sdk_async_worker.py")
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, str(script), str(settings.data_dir), settings.database_url, inprocess_gateway.tgi.url],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield worker
    finally:
        stop_process(worker, timeout=20)
