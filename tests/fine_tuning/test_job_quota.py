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


async def test_endpoint_quota_counts_fine_tunes_as_llm_engine_does(app_client: httpx.AsyncClient) -> None:
    """``max_endpoints`` caps endpoints plus queued or running fine-tunes (each ends in a model to deploy)."""
    limits = {"max_endpoints": 2, "max_jobs": 0}
    assert (await app_client.put("/v1/tenants/team-c/limits", json=limits, auth=("admin", ""))).status_code == 200
    team_c = ("team-c", "")
    endpoint = {"name": "c-chat", "model_name": "smollm2-135m"}
    assert (await app_client.post("/v1/llm/model-endpoints", json=endpoint, auth=team_c)).status_code == 200
    upload = await app_client.post("/v1/files", files={"file": ("t.csv", b"prompt,response\nq,a\n")}, auth=team_c)
    fine_tune = {"model": "smollm2-135m", "training_file": upload.json()["id"]}
    first = await app_client.post("/v1/llm/fine-tunes", json=fine_tune, auth=team_c)
    assert first.status_code == 200, first.text

    # One endpoint and one fine-tune: both ways to a third are refused, naming the limit.
    for refused in (
        await app_client.post("/v1/llm/fine-tunes", json=fine_tune, auth=team_c),
        await app_client.post("/v1/llm/model-endpoints", json={**endpoint, "name": "c-two"}, auth=team_c),
    ):
        assert refused.status_code == 429, refused.text
        assert "max_endpoints (2 model endpoints and fine-tunes)" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1

    # Deleting the endpoint frees its place for the next fine-tune.
    assert (await app_client.delete("/v1/llm/model-endpoints/c-chat", auth=team_c)).status_code == 200
    assert (await app_client.post("/v1/llm/fine-tunes", json=fine_tune, auth=team_c)).status_code == 200
