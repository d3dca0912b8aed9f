"""Fixtures for async completions: real worker processes on the embedded broker and on the machine's Redis.

Every test gets its own SQLite registry, data directory (embedded broker and results files) and, on Redis, its own
key prefix, deleted afterwards. Replicas are announced to the worker the way the local orchestrator does it: through
its state file.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.processes import process_start_time
from model_engine_server.orchestration.local.state import DeploymentRecord, ReplicaRecord, StateFile
from model_engine_server.tasks.worker import start_worker_process
from model_engine_server.testing.platform import stop_process
from tests.fakes import FakeResolver

REDIS_URL = os.environ.get("LLM_ENGINE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def delete_redis_prefix(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["embedded", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Broker settings: the embedded SQLite broker, or Redis under a key prefix of this test alone."""
    if request.param == "embedded":
        yield {}
        return
    if not redis_available():
        pytest.fail(f"Redis is not reachable at {REDIS_URL}")
    prefix = f"llme-test-{uuid.uuid4().hex[:12]}:"
    yield {"broker_url": REDIS_URL, "broker_key_prefix": prefix}
    delete_redis_prefix(prefix)


@pytest.fixture
def task_settings(broker: dict[str, str], sqlite_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=sqlite_url,
        data_dir=tmp_path / "data",
        auth_mode=AuthMode.OPEN,
        async_task_visibility_timeout_seconds=6,
        usage_flush_seconds=0.2,
        **broker,  # type: ignore[arg-type]
    )


@dataclass
class Workers:
    """Worker processes of one test; all are stopped at teardown (killed if they do not stop in time)."""

    settings: Settings
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, settings: Settings | None = None, *, concurrency: int = 4) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"worker-{len(self.processes)}.log"
        process = start_worker_process(settings or self.settings, concurrency=concurrency, log_file=log)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()  # all at once: they stop in parallel
        for process in self.processes:
            stop_process(process)


@pytest.fixture
def workers(task_settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(task_settings, tmp_path / "logs")
    try:
        yield group
    finally:
        group.stop_all()


@contextlib.asynccontextmanager
async def gateway_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real gateway app (lifespan included) behind an httpx client."""
    app = create_app(settings, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.fixture
async def gateway_client(task_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_for(task_settings) as client:
        yield client


@pytest.fixture
async def registry(task_settings: Settings) -> AsyncIterator[EndpointRegistry]:
    engine = create_engine(task_settings.database_url)
    try:
        yield EndpointRegistry(create_session_factory(engine))
    finally:
        await engine.dispose()


def announce_replicas(settings: Settings, endpoints: list[tuple[ModelEndpoint, list[int]]]) -> None:
    """Write the local orchestrator's state file: these ports serve these endpoints (this process stands in for the
    replica processes, so the worker sees them as alive)."""
    pid = os.getpid()
    start_time = process_start_time(pid)
    records = [
        DeploymentRecord(
            endpoint_id=endpoint.id,
            name=endpoint.name,
            revision=endpoint.revision,
            launch_key="test",
            desired_replicas=len(ports),
            replicas=[
                ReplicaRecord(slot, pid, port, start_time, "test", os.devnull, 0, ready=True)
                for slot, port in enumerate(ports)
            ],
        )
        for endpoint, ports in endpoints
    ]
    StateFile(state_file_path(settings.data_dir)).save(records)


async def ready_endpoint(
    registry: EndpointRegistry, name: str, owner: str = "alice", **config: object
) -> ModelEndpoint:
    endpoint = await registry.create(
        owner=owner,
        name=name,
        config=EndpointConfig(model_name="smollm2-135m", **config),  # type: ignore[arg-type]
    )
    await registry.set_status(endpoint.id, endpoint.revision, EndpointStatus.READY, None)
    refreshed = await registry.get_by_id(endpoint.id)
    assert refreshed is not None
    return refreshed


async def served_endpoint(registry: EndpointRegistry, settings: Settings, name: str, port: int) -> None:
    """A READY endpoint ``name`` whose one replica is the server on ``port``."""
    announce_replicas(settings, [(await ready_endpoint(registry, name), [port])])
