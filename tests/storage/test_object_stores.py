"""Both object stores keep the same contract: atomic puts, reads, listings, deletes — S3 against a real S3 server."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import Settings
from model_engine_server.storage.local import LocalObjectStore
from model_engine_server.storage.locations import StorageConfig, UnsupportedLocationError, open_location
from model_engine_server.storage.port import ObjectNotFoundError, ObjectStore
from model_engine_server.storage.s3 import S3ObjectStore
from tests.fakes import FakeResolver
from tests.fine_tuning.finished import MERGED_FILES, record_finished_fine_tune


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    bucket: str = request.getfixturevalue("bucket")
    return S3ObjectStore(bucket, "some/prefix", endpoint_url=request.getfixturevalue("s3_endpoint"))


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.put("jobs/a/parts/1.json", b"[1]")
    store.put("jobs/a/parts/2.json", b"[2]")
    store.put("jobs/b/job.json", b"{}")
    assert store.get("jobs/a/parts/2.json") == b"[2]"
    assert store.list("jobs/a/") == ["jobs/a/parts/1.json", "jobs/a/parts/2.json"]
    assert store.exists("jobs/b/job.json") and not store.exists("jobs/b/missing.json")
    store.put("jobs/a/parts/1.json", b"[1, 1]")  # replaced whole
    assert store.get("jobs/a/parts/1.json") == b"[1, 1]"
    store.delete("jobs/a/parts/1.json")
    store.delete("jobs/a/parts/1.json")  # absent is fine
    with pytest.raises(ObjectNotFoundError):
        store.get("jobs/a/parts/1.json")
    assert store.list("jobs/a/") == ["jobs/a/parts/2.json"]
    assert store.list("nothing/") == []


def test_put_file_streams_and_counts(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB: S3 uploads it in parts
    assert store.put_file("files/big.bin", io.BytesIO(data)) == len(data)
    assert store.get("files/big.bin") == data


def test_keys_cannot_leave_the_store(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="leaves the store"):
        store.put("../outside", b"x")


def test_a_failed_local_write_leaves_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")

    class Broken(io.RawIOBase):
        def readinto(self, buffer: object) -> int:  # noqa: ARG002 (io signature)
            raise OSError("connection reset while uploading")

    with pytest.raises(OSError):
        store.put_file("files/half.bin", Broken())  # type: ignore[arg-type]
    assert [p for p in (tmp_path / "objects").rglob("*") if p.is_file()] == []


def test_locations(tmp_path: Path) -> None:
    local = StorageConfig(url=(tmp_path / "objects").as_uri(), allow_local_paths=True)
    store, key = open_location((tmp_path / "in.json").as_uri(), local)
    assert isinstance(store, LocalObjectStore) and key.endswith("in.json")
    cluster = StorageConfig(url="s3://bucket/prefix", allow_local_paths=False)
    with pytest.raises(UnsupportedLocationError, match="only when jobs run on this machine"):
        open_location("file:///etc/passwd", cluster)
    with pytest.raises(UnsupportedLocationError, match="s3://bucket/key"):
        open_location("http://example.com/x", cluster)
    with pytest.raises(UnsupportedLocationError, match="no bucket"):
        open_location("s3:///key", cluster)


async def test_files_api_on_s3(bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        object_store_url=f"s3://{bucket}/llm-engine",
        s3_endpoint_url=s3_endpoint,
    )
    app = create_app(settings, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            uploaded = await c.post("/v1/files", files={"file": ("p.json", b'{"prompts": ["x"]}')}, auth=("a", ""))
            file_id = uploaded.json()["id"]
            content = await c.get(f"/v1/files/{file_id}/content", auth=("a", ""))
            assert content.json()["content"] == '{"prompts": ["x"]}'
            s3 = S3ObjectStore(bucket, endpoint_url=s3_endpoint)
            (key,) = s3.list("llm-engine/files/")
            assert key.endswith(file_id)
            assert (await c.delete(f"/v1/files/{file_id}", auth=("a", ""))).json() == {"deleted": True}
            assert s3.list("llm-engine/") == []
    assert not (tmp_path / "data" / "objects").exists()  # nothing went to the local disk


async def test_fine_tuned_model_downloads_are_presigned_s3_urls(
    bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        object_store_url=f"s3://{bucket}/llm-engine",
        s3_endpoint_url=s3_endpoint,
    )
    store = S3ObjectStore(bucket, prefix="llm-engine", endpoint_url=s3_endpoint)
    await record_finished_fine_tune(database_url, store, "a", "smollm2-135m.s3.261130-010203")
    app = create_app(settings, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            body = {"model_name": "smollm2-135m.s3.261130-010203", "download_format": "hugging_face"}
            urls = (await c.post("/v1/llm/model-endpoints/download", json=body, auth=("a", ""))).json()["urls"]
    assert set(urls) == set(MERGED_FILES)
    for name, url in urls.items():
        assert url.startswith(s3_endpoint) and "Signature" in url  # S3 serves it, not the gateway
        assert httpx.get(url, timeout=10).content == MERGED_FILES[name]
