"""One platform for the fault tests: ``model-engine serve`` (gateway, reconciler, local orchestrator, async worker)
on a private PostgreSQL and a private Redis, with instant TGI-protocol servers as the inference servers (the faults
are not about the model). Shared by the whole package; each test leaves it healthy for the next."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.state import StateFile
from model_engine_server.testing.platform import inference_servers
from model_engine_server.testing.serving import running
from tests.processes import MODEL_ENGINE, EngineProcess, engine_env, free_port, poll_until
from tests.resilience.services import PrivatePostgres, PrivateRedis

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_DELAY = 0.05  # streamed tokens arrive 50 ms apart, so a stream can be hit mid-way
OWNER = ("resilience", "")
INSTANT_TGI = "model_engine_server.testing.tgi"  # the command line of the inference servers the platform starts


def report(figure: str) -> None:
    """A measured figure for docs/reliability.md (shown with ``pytest -s``)."""
    print(f"\n[reliability] {figure}")  # noqa: T201


@dataclass
class Platform:
    serve: EngineProcess
    postgres: PrivatePostgres
    redis: PrivateRedis

    @property
    def url(self) -> str:
        return self.serve.url

    def servers(self, endpoint: str | None = None) -> set[int]:
        return inference_servers(self.serve.env["LLM_ENGINE_DATA_DIR"], INSTANT_TGI, endpoint)

    def served(self, endpoint: str) -> int:
        """Requests the endpoint's live inference servers have answered (their ``tgi_request_success``)."""
        state = StateFile(state_file_path(Path(self.serve.env["LLM_ENGINE_DATA_DIR"]))).load()
        ports = [r.port for d in state if d.name == endpoint for r in d.replicas]
        total = 0
        for port in ports:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            total += int(re.search(r"^tgi_request_success (\d+)$", metrics, re.MULTILINE).group(1))  # type: ignore[union-attr]
        return total

    def workers(self) -> set[int]:
        """Pids of the async workers started for this platform (they would outlive a killed ``serve``)."""
        return inference_servers(self.serve.env["LLM_ENGINE_DATA_DIR"], "--exit-with-parent")

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=OWNER, timeout=timeout)

    def create_ready_endpoint(self, name: str, workers: int = 1) -> None:
        body = {"name": name, "model_name": "smollm2-135m", "min_workers": workers, "max_workers": workers}
        with self.client() as client:
            created = client.post("/v1/llm/model-endpoints", json=body)
            assert created.status_code == 200, created.text

            def ready() -> bool:
                endpoint = client.get(f"/v1/llm/model-endpoints/{name}").json()
                return (
                    endpoint["status"] == "READY"
                    and endpoint["spec"]["deployment_state"]["available_workers"] == workers
                )

            poll_until(ready, 60, f"endpoint {name} READY with {workers} replicas")

    def complete(self, client: httpx.Client, name: str, **fields: object) -> httpx.Response:
        body = {"prompt": "hello there", "max_new_tokens": 3, "temperature": 0, **fields}
        return client.post("/v1/llm/completions-sync", params={"model_endpoint_name": name}, json=body)

    def submit(self, client: httpx.Client, name: str) -> httpx.Response:
        """An async completion; the task's result is " the quick brown"."""
        body = {"prompt": "hello there", "max_new_tokens": 3, "temperature": 0}
        return client.post("/v1/llm/completions-async", params={"model_endpoint_name": name}, json=body)


@pytest.fixture(scope="package")
def postgres() -> Iterator[PrivatePostgres]:
    # Not under pytest's temporary directory: the postgres user cannot enter root's.
    directory = Path(tempfile.mkdtemp(prefix="llm-engine-pg-"))
    server = PrivatePostgres(directory)
    server.init()
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="package")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with running(PrivateRedis(tmp_path_factory.mktemp("redis"))) as server:
        yield server


@pytest.fixture(scope="package")
def platform(
    tmp_path_factory: pytest.TempPathFactory, postgres: PrivatePostgres, redis: PrivateRedis
) -> Iterator[Platform]:
    data_dir = tmp_path_factory.mktemp("platform")
    env = engine_env(
        data_dir,
        database_url=postgres.url,
        broker_url=redis.url,
        inference_server_command=f"{sys.executable} -m model_engine_server.testing.tgi --token-delay {TOKEN_DELAY}",
        demo_model="",
        reconcile_interval_seconds="0.5",
        # The backstop for a message no worker holds any more (redelivered after this) acts within a test's wait.
        async_task_visibility_timeout_seconds="10",
    )
    env["PYTHONPATH"] = f"{REPO_ROOT}:{env.get('PYTHONPATH', '')}"
    port = free_port()
    serve = EngineProcess(
        [MODEL_ENGINE, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        data_dir / "serve.log",
        url=f"http://127.0.0.1:{port}",
    )
    serve.start(timeout=120)
    try:
        yield Platform(serve, postgres, redis)
    finally:
        serve.stop()
