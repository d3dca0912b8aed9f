"""The tenant's ``max_jobs`` quota covers batch completions and fine-tunes together: 429 past it, naming the limit."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from model_engine_server.config import AuthMode, Settings

A = ("team-a", "")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", auth_mode=AuthMode.OPEN, tenant_max_jobs=1)


async def test_one_job_at_a_time_across_kinds(app_client: httpx.AsyncClient) -> None:
    body = {
        "output_data_path": "file:///tmp/never-written.json",
        "model_config": {"model": "smollm2-135m"},
        "content": {"prompts": ["a"], "max_new_tokens": 4, "temperature": 0.0},
    }
    assert (await app_client.post("/v1/llm/batch-completions", json=body, auth=A)).status_code == 200
    upload = await app_client.post("/v1/files", files={"file": ("t.csv", b"prompt,response\nq,a\n")}, auth=A)
    fine_tune = {"model": "smollm2-135m", "training_file": upload.json()["id"]}
    refused = await app_client.post("/v1/llm/fine-tunes", json=fine_tune, auth=A)
    assert refused.status_code == 429, refused.text
    assert "max_jobs" in refused.json()["detail"] and refused.headers["retry-after"]
    # Another tenant has its own quota.
    other = await app_client.post("/v1/llm/batch-completions", json=body, auth=("team-b", ""))
    assert other.status_code == 200
