"""The control-plane image, read-only and non-root: the migration Job; `model-engine serve` with the demo model; the
gateway, the async worker and the orchestrator as three containers, as the chart runs them. Driven by the published
``scale-llm-engine`` client, on the host's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from model_engine_server.testing import eventually, free_port
from model_engine_server.testing.peers import run_peer_script
from tests.conftest import POSTGRES_ADMIN_DSN, _ensure_postgres_running, admin_sql
from tests.containers.conftest import Images
from tests.containers.podman import chart_user
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

DEPLOYING_CLIENT_SCRIPT = """
import json, time
from llmengine import Completion, Model
from llmengine.data_types.core import LLMInferenceFramework

Model.create(name="demo", model="smollm2-135m", inference_framework_image_tag="latest",
             inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE, min_workers=1)
deadline = time.monotonic() + 300
while (status := Model.get("demo").status) != "READY":
    assert status != "UPDATE_FAILED" and time.monotonic() < deadline, status
    time.sleep(1)
response = Completion.create(model="demo", prompt="The capital of France is", max_new_tokens=5, temperature=0)
print(json.dumps({"text": response.output.text, "tokens": response.output.num_completion_tokens}))
"""


@pytest.fixture
def database_dsn() -> Iterator[str]:
    """An empty PostgreSQL database on the host (the chart's external database), dropped afterwards."""
    _ensure_postgres_running()
    name = f"llm_engine_container_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    yield f"{POSTGRES_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _client_env(url: str) -> dict[str, str]:
    return {**os.environ, "LLM_ENGINE_BASE_PATH": url, "SCALE_API_KEY": API_KEY}


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
        result = run_peer_script(PUBLISHED_CLIENT_SCRIPT, env=_client_env(url), timeout=600)

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


def test_gateway_worker_and_orchestrator_containers_serve_sync_and_async_completions(
    images: Images, database_dsn: str, tmp_path: Path
) -> None:
    """The chart's three control-plane workloads, each its own container. With the local orchestrator, replicas run
    inside the orchestrator's container and the gateway and worker find them through its state file, so the three
    share the data directory and the process namespace (on Kubernetes each pod has its own, and replicas are found
    through the API)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    uid, gid = map(int, chart_user().split(":"))
    os.chown(data_dir, uid, gid)
    env = _platform_env(database_dsn)
    migrate = images.podman.once(images.control_plane, "migrate", options=["--network=host", *env])
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    run = images.podman.container
    with (
        run(images.control_plane, "orchestrator", options=env, data_dir=data_dir) as orchestrator,
        # Replicas are checked by pid, so the others see the orchestrator's processes (a pod's shared namespace).
        run(
            images.control_plane, "worker", options=[*env, f"--pid=container:{orchestrator.name}"], data_dir=data_dir
        ) as worker,
        run(
            images.control_plane,
            *("gateway", "--host", "127.0.0.1", "--port", str(port)),
            options=[*env, f"--pid=container:{orchestrator.name}"],
            data_dir=data_dir,
        ) as gateway,
    ):
        gateway.wait_for(lambda: _ready(url), timeout=120, what="GET /readyz to answer 200")
        deployed = run_peer_script(DEPLOYING_CLIENT_SCRIPT, env=_client_env(url), timeout=600)
        assert deployed.returncode == 0, deployed.stderr[-3000:] + orchestrator.logs()[-3000:]
        submitted = httpx.post(
            f"{url}/v1/llm/completions-async",
            params={"model_endpoint_name": "demo"},
            json={"prompt": "The capital of France is", "max_new_tokens": 5, "temperature": 0},
            headers={"x-api-key": API_KEY},
            timeout=30,
        )
        assert submitted.status_code == 200, submitted.text
        task = eventually(
            lambda: _task(url, submitted.json()["task_id"]),
            lambda state: state["status"] in ("SUCCESS", "FAILURE"),
            timeout=120,
            interval=0.5,
            what=lambda: f"the async task to finish; worker logs:\n{worker.logs()[-3000:]}",
        )

    sync = json.loads(deployed.stdout.strip().splitlines()[-1])
    assert sync["text"] and 1 <= sync["tokens"] <= 5
    assert task["status"] == "SUCCESS", task
    assert task["result"]["output"]["text"] == sync["text"]  # greedy: the worker got the same answer from the replica


def _task(url: str, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/async-tasks/{task_id}", headers={"x-api-key": API_KEY}, timeout=10)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return state
