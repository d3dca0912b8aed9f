"""``Model.download`` of a fine-tuned model: its owner gets expiring links to the merged checkpoint that work without
credentials; a changed or expired link, and anyone else, get a 404."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from model_engine_server.api.download_links import LINK_LIFETIME_SECONDS, ROUTE, check_link, download_url
from model_engine_server.config import Settings
from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.storage.local import LocalObjectStore
from model_engine_server.storage.locations import build_object_store
from tests.fine_tuning.finished import MERGED_FILES, record_finished_fine_tune

MODEL = "smollm2-135m.codes.261130-010203"
BODY = {"model_name": MODEL, "download_format": "hugging_face"}


async def test_owner_downloads_the_merged_checkpoint_through_signed_links(
    app_client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    await record_finished_fine_tune(database_url, build_object_store(settings.storage_config()), "team-a", MODEL)

    response = await app_client.post("/v1/llm/model-endpoints/download", json=BODY, auth=("team-a", ""))
    assert response.status_code == 200, response.text
    urls = response.json()["urls"]
    assert set(urls) == set(MERGED_FILES)
    for name, url in urls.items():
        fetched = await app_client.get(url)  # no credentials: the signature is the credential
        assert fetched.status_code == 200 and fetched.content == MERGED_FILES[name]

    link = urlparse(urls["config.json"])
    tampered = url_with(urls["config.json"], signature="0" * 64)
    assert (await app_client.get(tampered)).status_code == 404
    other_key = url_with(urls["config.json"], path=link.path.replace("config.json", "model.safetensors"))
    assert (await app_client.get(other_key)).status_code == 404  # a signature covers one file only


async def test_nobody_else_can_download_it(
    app_client: httpx.AsyncClient, settings: Settings, database_url: str
) -> None:
    await record_finished_fine_tune(database_url, build_object_store(settings.storage_config()), "team-a", MODEL)
    response = await app_client.post("/v1/llm/model-endpoints/download", json=BODY, auth=("team-b", ""))
    assert response.status_code == 404 and MODEL in response.json()["detail"]
    other_format = {**BODY, "download_format": "gguf"}
    refused = await app_client.post("/v1/llm/model-endpoints/download", json=other_format, auth=("team-a", ""))
    assert refused.status_code == 400 and "hugging_face" in refused.json()["detail"]


def url_with(url: str, *, signature: str | None = None, path: str | None = None) -> str:
    parts = urlparse(url)
    query = parse_qs(parts.query)
    if signature is not None:
        query["signature"] = [signature]
    return parts._replace(path=path or parts.path, query="&".join(f"{k}={v[0]}" for k, v in query.items())).geturl()


def test_a_link_works_for_an_hour_then_says_it_expired(tmp_path: Path) -> None:
    store, secret, issued = LocalObjectStore(tmp_path), b"s" * 32, 1_800_000_000.0
    link = urlparse(download_url(store, "jobs/j/result/merged/config.json", "http://gw", secret, now=issued))
    query = parse_qs(link.query)
    key, expires, signature = link.path.removeprefix(ROUTE + "/"), int(query["expires"][0]), query["signature"][0]
    assert expires == issued + LINK_LIFETIME_SECONDS
    check_link(key, expires, signature, secret, now=issued + LINK_LIFETIME_SECONDS - 1)
    with pytest.raises(NotFoundError, match="expired"):
        check_link(key, expires, signature, secret, now=issued + LINK_LIFETIME_SECONDS + 1)
