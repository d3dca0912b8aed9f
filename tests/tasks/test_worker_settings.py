"""A worker child process gets exactly the settings it was started with."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from model_engine_server.config import AuthMode, ModelZooOverride, OrchestratorKind, Settings, load_settings
from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.tasks.worker import settings_environment


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(
        data_dir=tmp_path,
        broker_url="redis://127.0.0.1:6379/3",
        broker_key_prefix="install-a:",
        auth_mode=AuthMode.KEYS,
        bootstrap_api_key=SecretStr("llme_secret"),
        orchestrator=OrchestratorKind.KUBERNETES,
        kubernetes_gpu_tolerations=["nvidia.com/gpu", "example.com/accelerator"],
        async_task_visibility_timeout_seconds=45,
        model_zoo_overrides={
            "tiny": ModelZooOverride(
                hf_repo="org/tiny", frameworks=[InferenceFramework.VLLM], context_length=512, gpus=0, memory="1Gi"
            )
        },
    )
    for key, value in settings_environment(original).items():
        monkeypatch.setenv(key, value)
    loaded = load_settings()
    assert loaded.model_dump() == original.model_dump()
    assert loaded.bootstrap_api_key is not None
    assert loaded.bootstrap_api_key.get_secret_value() == "llme_secret"
