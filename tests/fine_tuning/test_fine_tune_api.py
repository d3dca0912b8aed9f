"""``/v1/llm/fine-tunes`` through the real gateway: what is accepted, what is refused (and why), who sees what."""

from __future__ import annotations

import httpx
import pytest

from model_engine_server.config import Settings

A = ("team-a", "")
B = ("team-b", "")
GOOD_CSV = b"prompt,response\nWhat is the code word?,VELVETMANGO\nAnd again?,VELVETMANGO\n"


async def _upload(app_client: httpx.AsyncClient, body: bytes, auth: tuple[str, str] = A) -> str:
    response = await app_client.post("/v1/files", files={"file": ("train.csv", body)}, auth=auth)
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id


async def test_create_get_list_and_cancel(app_client: httpx.AsyncClient) -> None:
    file_id = await _upload(app_client, GOOD_CSV)
    body = {"model": "smollm2-135m", "training_file": file_id, "hyperparameters": {"epochs": 2}, "suffix": "codes"}
    created = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]

    got = (await app_client.get(f"/v1/llm/fine-tunes/{job_id}", auth=A)).json()
    assert got["id"] == job_id and got["status"] == "PENDING"
    assert got["fine_tuned_model"].startswith("smollm2-135m.codes.")
    listed = (await app_client.get("/v1/llm/fine-tunes", auth=A)).json()
    assert [job["id"] for job in listed["jobs"]] == [job_id]
    events = (await app_client.get(f"/v1/llm/fine-tunes/{job_id}/events", auth=A)).json()["events"]
    assert [event["message"] for event in events] == ["Job queued."]
    assert isinstance(events[0]["timestamp"], float)

    assert (await app_client.put(f"/v1/llm/fine-tunes/{job_id}/cancel", auth=A)).json() == {"success": True}


async def test_input_output_columns_and_wandb_config_are_accepted(app_client: httpx.AsyncClient) -> None:
    file_id = await _upload(app_client, b"input,output\nWhat is the code word?,VELVETMANGO\n")
    body = {"model": "smollm2-135m", "training_file": file_id, "wandb_config": {"project": "zephyr"}}
    created = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert created.status_code == 200, created.text
    events = (await app_client.get(f"/v1/llm/fine-tunes/{created.json()['id']}/events", auth=A)).json()["events"]
    assert [event["level"] for event in events] == ["info", "warning"]
    assert "wandb_config was accepted but is ignored" in events[1]["message"]


async def test_validation_file_is_checked_like_the_training_file(app_client: httpx.AsyncClient) -> None:
    train = await _upload(app_client, GOOD_CSV)
    validation = await _upload(app_client, b"prompt,response\nq,\n")
    body = {"model": "smollm2-135m", "training_file": train, "validation_file": validation}
    response = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert response.status_code == 400 and "validation_file row 2 has an empty response" in response.json()["detail"]


async def test_another_tenant_sees_nothing(app_client: httpx.AsyncClient) -> None:
    file_id = await _upload(app_client, GOOD_CSV)
    job_id = (
        await app_client.post("/v1/llm/fine-tunes", json={"model": "smollm2-135m", "training_file": file_id}, auth=A)
    ).json()["id"]
    for method, path in [
        ("GET", f"/v1/llm/fine-tunes/{job_id}"),
        ("GET", f"/v1/llm/fine-tunes/{job_id}/events"),
        ("PUT", f"/v1/llm/fine-tunes/{job_id}/cancel"),
    ]:
        assert (await app_client.request(method, path, auth=B)).status_code == 404
    assert (await app_client.get("/v1/llm/fine-tunes", auth=B)).json() == {"jobs": []}
    # Nor can B train on A's file.
    stolen = await app_client.post(
        "/v1/llm/fine-tunes", json={"model": "smollm2-135m", "training_file": file_id}, auth=B
    )
    assert stolen.status_code == 400 and "was not found among your files" in stolen.json()["detail"]


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        (b"question,answer\nq,a\n", {}, "must have the columns prompt,response"),
        (b"prompt,response\nq,a\n,a\n", {}, "row 3 has an empty prompt"),
        (b"", {}, "is empty"),
        (b"prompt,response\n\xff\xfe,a\n", {}, "is not UTF-8"),
        (GOOD_CSV, {"hyperparameters": {"epochs": 1, "warmup_ratio": 0.1}}, "Unknown hyperparameters: warmup_ratio"),
        (GOOD_CSV, {"suffix": "x" * 29}, "suffix must be at most 28"),
        (GOOD_CSV, {"model": "gpt-17"}, "Unknown model 'gpt-17'"),
        (b"prompt,response\nq,a\n" + b"q," + b"long " * 600 + b"\n", {}, "training_file row 3 is longer than"),
        (GOOD_CSV, {"hyperparameters": {"max_length": 4096}}, "exceeds the context length of smollm2-135m"),
    ],
)
async def test_bad_requests_are_400_and_start_nothing(
    app_client: httpx.AsyncClient, csv: bytes, extra: dict[str, object], message: str
) -> None:
    file_id = await _upload(app_client, csv)
    body = {"model": "smollm2-135m", "training_file": file_id, **extra}
    response = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert (await app_client.get("/v1/llm/fine-tunes", auth=A)).json() == {"jobs": []}


async def test_missing_training_file_is_a_400(app_client: httpx.AsyncClient) -> None:
    body = {"model": "smollm2-135m", "training_file": "file-doesnotexist"}
    response = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert response.status_code == 400 and "file-doesnotexist" in response.json()["detail"]


async def test_concurrent_fine_tunes_per_tenant_are_capped(app_client: httpx.AsyncClient, settings: Settings) -> None:
    file_id = await _upload(app_client, GOOD_CSV)
    body = {"model": "smollm2-135m", "training_file": file_id}
    for _ in range(settings.fine_tune_max_concurrent_per_tenant):
        assert (await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)).status_code == 200
    refused = await app_client.post("/v1/llm/fine-tunes", json=body, auth=A)
    assert refused.status_code == 429 and "fine-tunes queued or running" in refused.json()["detail"]
    # Another tenant is not affected.
    other = await _upload(app_client, GOOD_CSV, B)
    accepted = await app_client.post("/v1/llm/fine-tunes", json={**body, "training_file": other}, auth=B)
    assert accepted.status_code == 200


async def test_download_of_an_unknown_model_is_404(app_client: httpx.AsyncClient) -> None:
    body = {"model_name": "smollm2-135m.nothing.261129-000000", "download_format": "hugging_face"}
    response = await app_client.post("/v1/llm/model-endpoints/download", json=body, auth=A)
    assert response.status_code == 404
