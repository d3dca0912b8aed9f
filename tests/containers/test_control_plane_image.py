"""The control-plane image, read-only and non-root: the migration Job, and `model-engine serve` with the demo model
driven by the published ``scale-llm-engine`` client, on the host's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from model_engine_server.testing.peers import run_peer_script
from tests.conftest import POSTGRES_ADMIN_DSN, _ensure_postgres_running, admin_sql
from tests.containers.conftest import Images
from tests.containers.podman import free_port
from tests.tasks.conftest import REDIS_URL

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(3600)]

API_KEY = "container-test-key"

PUBLISHED_CLIENT_SCRIPT = """
import json, time
from llmengine import Completion, Model

deadline = time.monotonic() + 300
while (status := Model.get("smollm2-135m").status) != "READY":
    assert status != "UPDATE_FAILED" and time.monotonic() < deadline, status
    time.sleep(1)
response = Completion.create(model="smollm2-135m", prompt="The capital of France is", max_new_tokens=5, temperature=0)
events = list(Completion.create(model="smollm2-135m", prompt="The capital of France is", max_new_tokens=5,
                                temperature=0, stream=True))
print(json.dumps({"text": response.output.text, "tokens": response.output.num_completion_tokens,
                  "streamed": "".join(e.output.text for e in events), "finished": events[-1].output.finished}))
"""


@pytest.fixture
def database_dsn() -> Iterator[str]:
    """An empty PostgreSQL database on the host (the chart's external database), dropped afterwards."""
    _ensure_postgres_running()
    name = f"llm_engine_container_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _platform_env(database_dsn: str) -> list[str]:
    env = {
        "LLM_ENGINE_DATABASE_URL": database_dsn.replace("postgresql://", "postgresql+asyncpg://"),
        "LLM_ENGINE_BROKER_URL": REDIS_URL,
        "LLM_ENGINE_BROKER_KEY_PREFIX": f"container-{uuid.uuid4().hex[:8]}:",
        "LLM_ENGINE_BOOTSTRAP_API_KEY": API_KEY,
    }
    return [flag for name, value in env.items() for flag in ("--env", f"{name}={value}")]


async def _tables(dsn: str) -> set[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await connection.close()


def test_migration_job_creates_the_schema(images: Images, database_dsn: str) -> None:
    migrate = images.podman.once(
        images.control_plane, "migrate", options=["--network=host", *_platform_env(database_dsn)]
    )

    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Database schema is up to date" in migrate.stdout
    assert {"alembic_version", "model_endpoints", "api_keys"} <= asyncio.run(_tables(database_dsn))


def test_serve_answers_the_published_client_with_the_demo_model(images: Images, database_dsn: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = ["serve", "--host", "127.0.0.1", "--port", str(port)]

    with images.podman.container(images.control_plane, *command, options=_platform_env(database_dsn)) as container:
        container.wait_for(lambda: _ready(url), timeout=120, what="GET /readyz to answer 200")
        result = run_peer_script(
            PUBLISHED_CLIENT_SCRIPT,
            env={**os.environ, "LLM_ENGINE_BASE_PATH": url, "SCALE_API_KEY": API_KEY},
            timeout=600,
        )

        assert result.returncode == 0, result.stderr[-3000:] + container.logs()[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["text"] and 1 <= out["tokens"] <= 5
    assert out["streamed"] == out["text"] and out["finished"]


def _ready(url: str) -> bool:
    """The chart's readiness probe."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
