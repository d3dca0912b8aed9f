"""Our SDK's FineTune and Model.download against ``model-engine gateway`` (no reconciler runs: jobs stay queued)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmengine import File, FineTune, FineTuneStatus, Model
from llmengine.errors import BadRequestError, NotFoundError

from model_engine_server.testing.platform import Platform


def _upload(tmp_path: Path, text: str) -> str:
    path = tmp_path / "train.csv"
    path.write_text(text)
    with path.open("rb") as handle:
        return File.upload(handle).id


def test_create_get_list_events_and_cancel(gateway: Platform, tmp_path: Path) -> None:
    training_file = _upload(tmp_path, "prompt,response\nWhat is the code word?,VELVETMANGO\n")
    created = FineTune.create("smollm2-135m", training_file, hyperparameters={"epochs": 2}, suffix="codes")
    job = FineTune.get(created.id)
    assert job.status is FineTuneStatus.PENDING and job.fine_tuned_model is not None
    assert job.fine_tuned_model.startswith("smollm2-135m.codes.")
    assert [j.id for j in FineTune.list().jobs] == [created.id]
    assert [e.message for e in FineTune.get_events(created.id).events] == ["Job queued."]
    assert FineTune.cancel(created.id).success


def test_bad_requests_raise_bad_request_naming_the_problem(gateway: Platform, tmp_path: Path) -> None:
    no_columns = _upload(tmp_path, "question,answer\nq,a\n")
    with pytest.raises(BadRequestError, match="must have the columns prompt,response"):
        FineTune.create("smollm2-135m", no_columns)
    good = _upload(tmp_path, "prompt,response\nq,a\n")
    with pytest.raises(BadRequestError, match="Unknown hyperparameters: warmup"):
        FineTune.create("smollm2-135m", good, hyperparameters={"warmup": 1})


def test_unknown_fine_tunes_and_models_are_not_found(gateway: Platform) -> None:
    with pytest.raises(NotFoundError):
        FineTune.get("job-missing")
    with pytest.raises(NotFoundError):
        Model.download("smollm2-135m.nothing.261129-000000")
