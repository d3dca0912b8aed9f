"""Fixtures for the SDK's tests: configuration reset between tests, and a scripted HTTP server."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from llmengine import RetryPolicy, _transport, api_engine
from sdk_platform import Platform, start_platform
from sdk_scripted_server import ScriptedServer

# The repository root, so these tests can use `tests.peer_clients` and `benchmarks.instant_tgi` like the
# platform's own tests do (pytest only puts it on sys.path when it collects the root `tests` package).
REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sdk_inprocess_gateway import BackgroundGateway  # noqa: E402 - needs the repository root on sys.path

# Retries keep their shape but not their patience: tests must not wait for production backoff.
FAST_RETRIES = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


@pytest.fixture(autouse=True)
def sdk_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts from the environment alone and leaves no pooled connection behind."""
    monkeypatch.delenv("LLM_ENGINE_BASE_PATH", raising=False)
    monkeypatch.delenv("SCALE_API_KEY", raising=False)
    api_engine.set_base_path(None)
    api_engine.set_api_key(None)
    api_engine.set_retry_policy(FAST_RETRIES)
    yield
    api_engine.set_base_path(None)
    api_engine.set_api_key(None)
    api_engine.set_retry_policy(RetryPolicy())
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
    platform = start_platform("gateway", tmp_path_factory.mktemp("gateway"), auth_mode="open")
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def gateway(gateway_process: Platform) -> Platform:
    """The SDK pointed at the gateway, as a tenant of its own (open auth: every key is its own tenant)."""
    api_engine.set_base_path(gateway_process.url)
    api_engine.set_api_key(f"tenant-{uuid.uuid4().hex[:12]}")
    return gateway_process


@pytest.fixture(scope="session")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """``model-engine gateway`` in keys mode: only its ``api_key`` (owner ``sdk-tests``) is accepted."""
    key = f"sk-sdk-tests-{uuid.uuid4().hex}"
    platform = start_platform(
        "gateway",
        tmp_path_factory.mktemp("keyed-gateway"),
        auth_mode="keys",
        bootstrap_api_key=key,
        bootstrap_owner="sdk-tests",
    )
    platform.api_key = key
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="session")
def inprocess_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundGateway]:
    """The gateway app with READY endpoints routed to instant TGI servers (see ``sdk_inprocess_gateway``)."""
    running = BackgroundGateway(tmp_path_factory.mktemp("inprocess-gateway"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def completions(inprocess_gateway: BackgroundGateway) -> BackgroundGateway:
    """The SDK pointed at the in-process gateway as a tenant of its own."""
    api_engine.set_base_path(inprocess_gateway.url)
    api_engine.set_api_key(f"tenant-{uuid.uuid4().hex[:12]}")
    return inprocess_gateway


@pytest.fixture(scope="session")
def async_worker(inprocess_gateway: BackgroundGateway) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker for the in-process gateway's queues, sending every task to its instant TGI server."""
    settings = inprocess_gateway.settings
    log = settings.data_dir / "worker.log"
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
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=5)
