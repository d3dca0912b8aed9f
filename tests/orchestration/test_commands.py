"""``model-engine serve`` and ``model-engine orchestrator`` as processes, with the fast fake inference server."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from model_engine_server.db.migrate import upgrade
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint
from model_engine_server.orchestration.local.directory import state_file_path
from model_engine_server.orchestration.local.processes import process_alive
from model_engine_server.orchestration.local.state import StateFile
from model_engine_server.testing import eventually, free_port
from model_engine_server.testing.platform import model_engine_command, platform_env
from tests.orchestration.helpers import FAKE_SERVER_COMMAND, control_file

pytestmark = pytest.mark.timeout(120)

MODEL_ENGINE = model_engine_command()


def command_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The test kit's clean platform environment, with the kit's TGI server as every replica."""
    return platform_env(
        data_dir, inference_server_command=FAKE_SERVER_COMMAND, reconcile_interval_seconds="0.5", **settings
    )


def wait_until(condition: Callable[[], object], timeout: float, describe: str | Callable[[], str] = "") -> None:
    eventually(condition, timeout=timeout, what=describe, interval=0.1)


def ready_pids(data_dir: Path) -> list[int]:
    return [r.pid for d in StateFile(state_file_path(data_dir)).load() for r in d.replicas if r.ready]


@pytest.fixture
def output(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "output.log"
    yield path


def run(argv: list[str], env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT) -> int:
    process.send_signal(sig)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_serve_creates_the_demo_endpoint_and_ctrl_c_stops_its_servers(tmp_path: Path, output: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    process = run([*MODEL_ENGINE, "serve", "--port", str(port), "--no-worker"], command_env(data_dir), output)
    try:
        wait_until(lambda: bool(ready_pids(data_dir)) or process.poll() is not None, 60, output.read_text)
        # The demo's own line, not the replica log line "… is ready" printed before it.
        wait_until(lambda: "is ready. Try it" in output.read_text(), 30, output.read_text)
        demo = httpx.get(f"http://127.0.0.1:{port}/v1/llm/model-endpoints/smollm2-135m", auth=("admin", ""))
        assert demo.status_code == 200, demo.text
        assert demo.json()["status"] == "READY"
        assert demo.json()["spec"]["public_inference"] is True
        pids = ready_pids(data_dir)
    finally:
        code = stop(process)
    assert code == 0, output.read_text()
    assert not any(process_alive(pid, None) for pid in pids)
    text = output.read_text()
    assert "model_endpoint_name=smollm2-135m" in text  # the hint shows how to call it
    assert "Stopped." in text


def test_serve_on_a_taken_port_says_so(tmp_path: Path, output: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = run([*MODEL_ENGINE, "serve", "--port", str(port), "--no-worker"], command_env(tmp_path), output)
        assert process.wait(60) == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in " ".join(output.read_text().split())
    assert not (tmp_path / "registry.db").exists()  # nothing was started


async def create_endpoint(database_url: str, model: Path) -> ModelEndpoint:
    engine = create_engine(database_url)
    try:
        registry = EndpointRegistry(create_session_factory(engine))
        config = EndpointConfig(model_name="smollm2-135m", checkpoint_path=str(model))
        return await registry.create(owner="team-a", name="llm", config=config)
    finally:
        await engine.dispose()


async def endpoint_status(database_url: str, endpoint_id: str) -> EndpointStatus | None:
    engine = create_engine(database_url)
    try:
        endpoint = await EndpointRegistry(create_session_factory(engine)).get_by_id(endpoint_id)
        return None if endpoint is None else endpoint.status
    finally:
        await engine.dispose()


def test_orchestrator_command_reconciles_until_sigterm(tmp_path: Path, output: Path) -> None:
    data_dir = tmp_path / "data"
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    upgrade(database_url)
    endpoint = asyncio.run(create_endpoint(database_url, control_file(tmp_path)))
    env = command_env(data_dir, database_url=database_url)
    process = run([*MODEL_ENGINE, "orchestrator"], env, output)
    try:
        wait_until(
            lambda: (
                asyncio.run(endpoint_status(database_url, endpoint.id)) is EndpointStatus.READY
                or process.poll() is not None
            ),
            60,
            output.read_text,
        )
        assert process.poll() is None, output.read_text()
        pids = ready_pids(data_dir)
        assert len(pids) == 1
    finally:
        code = stop(process, signal.SIGTERM)
    assert code == 0, output.read_text()
    assert not process_alive(pids[0], None)
