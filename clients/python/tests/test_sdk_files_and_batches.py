"""Our SDK's File and batch methods against ``model-engine gateway`` (no reconciler runs: jobs stay queued)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmengine import (
    BatchCompletionsJob,
    Completion,
    CreateBatchCompletionsModelConfig,
    CreateBatchCompletionsV1RequestContent,
    CreateBatchCompletionsV1Response,
    File,
)
from llmengine.errors import BadRequestError, NotFoundError

from model_engine_server.testing.platform import Platform


def test_file_lifecycle(gateway: Platform, tmp_path: Path) -> None:
    path = tmp_path / "prompts.json"
    path.write_text('{"prompts": ["hello"]}')
    with path.open("rb") as handle:
        uploaded = File.upload(handle)
    assert File.get(uploaded.id).model_dump() == {"id": uploaded.id, "filename": "prompts.json", "size": 22}
    assert [f.id for f in File.list().files] == [uploaded.id]
    assert File.download(uploaded.id).content == '{"prompts": ["hello"]}'
    assert File.delete(uploaded.id).deleted is True
    with pytest.raises(NotFoundError):
        File.get(uploaded.id)


def test_batch_create_get_and_cancel(gateway: Platform, tmp_path: Path) -> None:
    config = CreateBatchCompletionsModelConfig(model="smollm2-135m", labels={"team": "evals"})
    content = CreateBatchCompletionsV1RequestContent(prompts=["a", "b"], max_new_tokens=4, temperature=0.0)
    v1 = Completion.batch_create((tmp_path / "out.json").as_uri(), config, content=content)
    assert isinstance(v1, CreateBatchCompletionsV1Response)
    job = Completion.get_batch_completion(v1.job_id)["job"]
    assert job["status"] == "queued" and job["progress"] == {"done": 0, "total": 2}
    assert job["metadata"] == {"team": "evals"}

    requests = [{"prompt": "a", "max_tokens": 4}, {"prompt": "b", "max_tokens": 4}]
    v2 = Completion.batch_create((tmp_path / "o2.json").as_uri(), config, content=requests, use_v2=True, priority="low")
    assert isinstance(v2, BatchCompletionsJob)
    assert (v2.status.value, v2.priority, v2.model_config_.model) == ("queued", "low", "smollm2-135m")

    assert Completion.cancel_batch_completion(v2.job_id) == {"success": True}


def test_bad_batches_raise_bad_request(gateway: Platform, tmp_path: Path) -> None:
    config = CreateBatchCompletionsModelConfig(model="not-a-model")
    content = CreateBatchCompletionsV1RequestContent(prompts=["a"], max_new_tokens=4, temperature=0.0)
    with pytest.raises(BadRequestError, match="Unknown model 'not-a-model'"):
        Completion.batch_create((tmp_path / "out.json").as_uri(), config, content=content)
