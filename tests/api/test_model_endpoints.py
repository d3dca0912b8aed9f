"""The endpoint API as a client sees it, on PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

ALICE = ("alice-key", "")
BOB = ("bob-key", "")


def body(name: str = "llama", **overrides: Any) -> dict[str, Any]:
    return {"name": name, "model_name": "smollm2-135m", "inference_framework": "text_generation_inference"} | overrides


async def create(app_client: httpx.AsyncClient, auth: tuple[str, str] = ALICE, **fields: Any) -> httpx.Response:
    return await app_client.post("/v1/llm/model-endpoints", json=body(**fields), auth=auth)


async def test_created_endpoint_is_listed_with_its_spec(app_client: httpx.AsyncClient) -> None:
    response = await create(app_client, labels={"team": "search"}, min_workers=0, max_workers=3, per_worker=4)
    assert response.status_code == 200, response.text
    assert response.json()["endpoint_creation_task_id"]

    listed = (await app_client.get("/v1/llm/model-endpoints", auth=ALICE)).json()["model_endpoints"]
    assert [e["name"] for e in listed] == ["llama"]
    endpoint = listed[0]
    assert endpoint["status"] == "UPDATE_PENDING"
    assert endpoint["model_name"] == "smollm2-135m"
    assert endpoint["inference_framework"] == "text_generation_inference"
    spec = endpoint["spec"]
    assert spec["created_by"] == "alice-key"
    assert spec["labels"] == {"team": "search"}
    assert spec["deployment_state"] == {
        "min_workers": 0,
        "max_workers": 3,
        "per_worker": 4,
        "concurrent_requests_per_worker": 4,
        "available_workers": 0,
        "unavailable_workers": 0,
    }
    # Hardware the request left out comes from the model zoo entry.
    assert spec["resource_state"]["memory"] == "2Gi"
    assert spec["resource_state"]["gpus"] == 0


async def test_get_returns_one_endpoint_and_404_for_unknown(app_client: httpx.AsyncClient) -> None:
    await create(app_client)
    got = await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)
    assert got.status_code == 200
    assert got.json()["name"] == "llama"
    missing = await app_client.get("/v1/llm/model-endpoints/nope", auth=ALICE)
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


async def test_duplicate_name_is_a_conflict(app_client: httpx.AsyncClient) -> None:
    assert (await create(app_client)).status_code == 200
    again = await create(app_client, auth=BOB)
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]


async def test_concurrent_creates_of_one_name_exactly_one_wins(app_client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(create(app_client, auth=(f"user-{i}", "")) for i in range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 7


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"min_workers": -1}, "min_workers must be >= 0"),
        ({"min_workers": 3, "max_workers": 2}, "must not exceed max_workers"),
        ({"per_worker": 0}, "per_worker"),
        ({"inference_framework": "deepspeed"}, "inference_framework 'deepspeed' is not supported"),
        ({"name": "Bad_Name"}, "is not valid"),
        ({"name": "download"}, "is reserved"),
        ({"name": "x" * 64}, "at most 63 characters"),
        ({"labels": {"k": "v" * 64}}, "label value"),
        ({"labels": {f"k{i}": "v" for i in range(40)}}, "at most 32 labels"),
        ({"model_name": "no-such-model"}, "Unknown model_name"),
        ({"gpus": 1, "num_shards": 2}, "num_shards (2) cannot exceed gpus (1)"),
        ({"gpu_type": "nvidia-imaginary"}, "gpu_type"),
        ({"quantize": "int3"}, "quantize"),
        ({"memory": "lots"}, "not a Kubernetes quantity"),
    ],
)
async def test_bad_values_are_400_with_a_precise_message(
    app_client: httpx.AsyncClient, fields: dict[str, Any], message: str
) -> None:
    response = await create(app_client, **fields)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert (await app_client.get("/v1/llm/model-endpoints", auth=ALICE)).json()["model_endpoints"] == []


@pytest.mark.parametrize(
    "fields",
    [{"min_workers": "many"}, {"endpoint_type": "batch"}, {"labels": ["a"]}, {"source": "s3"}, {"cpus": True}],
)
async def test_wrong_types_are_400_naming_the_field(app_client: httpx.AsyncClient, fields: dict[str, Any]) -> None:
    response = await create(app_client, **fields)
    assert response.status_code == 400
    field = next(iter(fields))
    assert response.json()["detail"].startswith(f"{field}"), response.json()


async def test_unknown_fields_are_ignored_and_numbers_accepted_for_quantities(app_client: httpx.AsyncClient) -> None:
    response = await create(app_client, some_future_field={"x": 1}, cpus=2, memory="3Gi", storage=10)
    assert response.status_code == 200, response.text
    resources = (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()["spec"]["resource_state"]
    assert (resources["cpus"], resources["memory"], resources["storage"]) == ("2", "3Gi", "10")


async def test_order_by_and_name_filter(app_client: httpx.AsyncClient) -> None:
    for name in ("bravo", "alpha", "charlie"):
        assert (await create(app_client, name=name)).status_code == 200

    async def names(query: str) -> list[str]:
        response = await app_client.get(f"/v1/llm/model-endpoints{query}", auth=ALICE)
        assert response.status_code == 200, response.text
        return [e["name"] for e in response.json()["model_endpoints"]]

    assert await names("?order_by=alphabetical") == ["alpha", "bravo", "charlie"]
    assert await names("?order_by=oldest") == ["bravo", "alpha", "charlie"]
    assert await names("?order_by=newest") == ["charlie", "alpha", "bravo"]
    assert await names("?name=alpha") == ["alpha"]
    bad_order = await app_client.get("/v1/llm/model-endpoints?order_by=random", auth=ALICE)
    assert bad_order.status_code == 400
    assert bad_order.json()["detail"].startswith("query parameter order_by: Input should be")


async def test_update_changes_only_the_fields_sent_and_restarts_the_rollout(app_client: httpx.AsyncClient) -> None:
    await create(app_client, labels={"team": "search"}, max_workers=2)
    response = await app_client.put("/v1/llm/model-endpoints/llama", json={"max_workers": 5}, auth=ALICE)
    assert response.status_code == 200, response.text
    endpoint = (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()
    assert endpoint["spec"]["deployment_state"]["max_workers"] == 5
    assert endpoint["spec"]["labels"] == {"team": "search"}
    assert endpoint["status"] == "UPDATE_PENDING"

    bad = await app_client.put("/v1/llm/model-endpoints/llama", json={"min_workers": 9}, auth=ALICE)
    assert bad.status_code == 400
    assert "must not exceed max_workers" in bad.json()["detail"]
    assert (await app_client.put("/v1/llm/model-endpoints/nope", json={}, auth=ALICE)).status_code == 404


async def test_delete_marks_the_endpoint_for_removal(app_client: httpx.AsyncClient) -> None:
    await create(app_client)
    response = await app_client.delete("/v1/llm/model-endpoints/llama", auth=ALICE)
    assert response.status_code == 200
    assert response.json() == {"deleted": True}
    endpoint = (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()
    assert endpoint["status"] == "DELETE_IN_PROGRESS"
    update = await app_client.put("/v1/llm/model-endpoints/llama", json={"max_workers": 2}, auth=ALICE)
    assert update.status_code == 409
    assert (await app_client.delete("/v1/llm/model-endpoints/nope", auth=ALICE)).status_code == 404


async def test_tenants_see_and_change_only_their_own_endpoints(app_client: httpx.AsyncClient) -> None:
    await create(app_client)
    assert (await app_client.get("/v1/llm/model-endpoints", auth=BOB)).json()["model_endpoints"] == []
    assert (await app_client.get("/v1/llm/model-endpoints/llama", auth=BOB)).status_code == 404
    assert (await app_client.put("/v1/llm/model-endpoints/llama", json={"max_workers": 2}, auth=BOB)).status_code == 404
    assert (await app_client.delete("/v1/llm/model-endpoints/llama", auth=BOB)).status_code == 404
    assert (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()["status"] == "UPDATE_PENDING"


async def test_endpoint_type_reads_back_as_streaming_which_every_endpoint_serves(app_client: httpx.AsyncClient) -> None:
    # The published client only parses "streaming"; every endpoint serves sync, stream and async requests anyway.
    assert (await create(app_client, endpoint_type="sync")).status_code == 200
    endpoint = (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()
    assert endpoint["spec"]["endpoint_type"] == "streaming"
    update = await app_client.put("/v1/llm/model-endpoints/llama", json={"endpoint_type": "async"}, auth=ALICE)
    assert update.status_code == 200
    endpoint = (await app_client.get("/v1/llm/model-endpoints/llama", auth=ALICE)).json()
    assert endpoint["spec"]["endpoint_type"] == "streaming"
