"""Batch submissions: bad input is a precise 400 at submit and nothing is queued; good input is queued once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import OrchestratorKind, Settings
from tests.fakes import FakeResolver

A = ("team-a", "")
V1 = "/v1/llm/batch-completions"
V2 = "/v2/batch-completions"


def _body(tmp_uri: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "output_data_path": tmp_uri,
        "model_config": {"model": "smollm2-135m", "labels": {}},
        "content": {"prompts": ["a", "b", "c"], "max_new_tokens": 4, "temperature": 0.0},
        "data_parallelism": 1,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"content": None}, "exactly one of `content` and `input_data_path`"),
        ({"input_data_path": "file-nope"}, "exactly one of `content` and `input_data_path`"),
        ({"content": None, "input_data_path": "file-doesnotexist"}, "cannot be read: no such file"),
        ({"content": {"max_new_tokens": 4, "temperature": 0}}, "no `prompts`"),
        ({"model_config": {"model": "no-such-model"}}, "Unknown model 'no-such-model'"),
        ({"data_parallelism": 65}, "data_parallelism"),
        ({"data_parallelism": 0}, "data_parallelism"),
        ({"content": {"prompts": ["a"], "max_new_tokens": 0, "temperature": 0}}, "max_new_tokens"),
        ({"output_data_path": "ftp://somewhere/out.json"}, "output_data_path"),
        (
            {"content": {"prompts": ["a"], "max_new_tokens": 10**6, "temperature": 0}},
            "exceeds the context length of smollm2-135m",
        ),
    ],
)
async def test_bad_batches_are_400_and_nothing_is_queued(
    app_client: httpx.AsyncClient, tmp_path: Any, changes: dict[str, Any], detail: str
) -> None:
    body = _body((tmp_path / "out.json").as_uri(), **changes)
    response = await app_client.post(V1, json=body, auth=A)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert not (tmp_path / "data" / "objects" / "jobs").exists()


async def test_unreadable_input_file_is_400(app_client: httpx.AsyncClient, tmp_path: Any) -> None:
    file_id = (await app_client.post("/v1/files", files={"file": ("p.json", b"not json")}, auth=A)).json()["id"]
    body = _body((tmp_path / "out.json").as_uri(), content=None, input_data_path=file_id)
    response = await app_client.post(V1, json=body, auth=A)
    assert response.status_code == 400
    assert "is not valid JSON" in response.json()["detail"]
    other = await app_client.post(V1, json=body, auth=("team-b", ""))
    assert other.status_code == 400 and "no such file" in other.json()["detail"]  # another tenant's file


@pytest.mark.parametrize(
    ("row", "detail"),
    [
        ({"max_tokens": 4}, "exactly one of `prompt` (completion) and `messages` (chat)"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "exactly one of `prompt`"),
        ({"prompt": "x", "n": 2}, "n must be 1"),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "return_token_log_probs"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
    ],
)
async def test_v2_rows_are_checked_with_their_row_number(
    app_client: httpx.AsyncClient, tmp_path: Any, row: dict[str, Any], detail: str
) -> None:
    content = [{"prompt": "fine", "max_tokens": 4}, row]
    response = await app_client.post(V2, json=_body((tmp_path / "o.json").as_uri(), content=content), auth=A)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("content row 1:")
    assert detail in response.json()["detail"]
    assert not (tmp_path / "data" / "objects" / "jobs").exists()


async def test_v2_mixing_completion_and_chat_is_400(app_client: httpx.AsyncClient, tmp_path: Any) -> None:
    content = [{"prompt": "fine"}, {"messages": [{"role": "user", "content": "x"}]}]
    response = await app_client.post(V2, json=_body((tmp_path / "o.json").as_uri(), content=content), auth=A)
    assert response.status_code == 400 and "mixes completion" in response.json()["detail"]


async def test_accepted_jobs_read_back_queued_and_only_for_their_owner(
    app_client: httpx.AsyncClient, tmp_path: Any
) -> None:
    created = await app_client.post(V2, json=_body((tmp_path / "o.json").as_uri(), priority="low"), auth=A)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["status"] == "queued" and job["priority"] == "low"
    assert job["model_config"]["model"] == "smollm2-135m"
    assert job["progress"] == {"done": 0, "total": 3}
    got = (await app_client.get(f"{V2}/{job['job_id']}", auth=A)).json()["job"]
    assert got["job_id"] == job["job_id"]
    assert (await app_client.get(f"{V2}/{job['job_id']}", auth=("team-b", ""))).status_code == 404
    updated = await app_client.post(f"{V2}/{job['job_id']}", json={"priority": "high"}, auth=A)
    assert updated.json()["priority"] == "high" and updated.json()["success"] is True
    cancel = await app_client.post(f"{V2}/{job['job_id']}/actions/cancel", auth=("team-b", ""))
    assert cancel.status_code == 404


async def test_jobs_on_kubernetes_without_shared_object_storage_are_refused(settings: Settings, tmp_path: Any) -> None:
    """An operator's misconfiguration: the pods could never read their work. 503 naming the setting; nothing queued."""
    on_kubernetes = settings.model_copy(update={"orchestrator": OrchestratorKind.KUBERNETES})
    app = create_app(on_kubernetes, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            response = await c.post(V2, json=_body("s3://bucket/out.json"), auth=A)
            assert response.status_code == 503, response.text
            assert "LLM_ENGINE_OBJECT_STORE_URL" in response.json()["detail"]
    assert not (tmp_path / "data" / "objects" / "jobs").exists()
