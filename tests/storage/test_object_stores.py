"""Both object stores keep the same contract: atomic puts, reads, listings, deletes — S3 against a real S3 server."""

from __future__ import annotations

import io
from pathlib import Path

import boto3
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


def test_a_write_that_fails_half_way_leaves_nothing(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    """The source breaks after 9 MB (S3 is then in the middle of a multipart upload): no object, no pending parts."""

    class Broken(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            if self.sent >= 9 * 1024 * 1024:
                raise OSError("connection reset while uploading")
            size = min(len(buffer), 1024 * 1024)
            buffer[:size] = b"x" * size
            self.sent += size
            return size

    with pytest.raises(OSError, match="connection reset"):
        store.put_file("files/half.bin", io.BufferedReader(Broken()))
    assert store.list("") == [] and not store.exists("files/half.bin")
    if isinstance(store, S3ObjectStore):
        s3 = boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint"))
        assert s3.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []) == []
    else:
        assert isinstance(store, LocalObjectStore)
        assert [p for p in store.root.rglob("*") if p.is_file()] == []  # no temporary file either


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


def _s3_settings(bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path) -> Settings:
    """A gateway whose object store is the moto bucket (under ``llm-engine/``)."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        object_store_url=f"s3://{bucket}/llm-engine",
        s3_endpoint_url=s3_endpoint,
    )


async def test_files_api_on_s3(bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path) -> None:
    settings = _s3_settings(bucket, s3_endpoint, database_url, tmp_path)
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


async def test_batch_input_from_s3_and_unreadable_s3_paths(
    bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path
) -> None:
    """``input_data_path`` as an ``s3://`` URI: read at submit; a missing object or a malformed bucket is a 400."""
    settings = _s3_settings(bucket, s3_endpoint, database_url, tmp_path)
    S3ObjectStore(bucket, endpoint_url=s3_endpoint).put(
        "inputs/p.json", b'{"prompts": ["a", "b"], "max_new_tokens": 4, "temperature": 0}'
    )
    app = create_app(settings, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:

            async def submit(input_path: str) -> httpx.Response:
                body = {
                    "input_data_path": input_path,
                    "output_data_path": f"s3://{bucket}/outputs/out.json",
                    "model_config": {"model": "smollm2-135m"},
                }
                return await c.post("/v2/batch-completions", json=body, auth=("a", ""))

            accepted = await submit(f"s3://{bucket}/inputs/p.json")
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["progress"] == {"done": 0, "total": 2}
            missing = await submit(f"s3://{bucket}/inputs/missing.json")
            assert missing.status_code == 400 and "cannot be read: no such file" in missing.json()["detail"]
            malformed = await submit("s3://Bad_Bucket!/p.json")
            assert malformed.status_code == 400, malformed.text
            detail = malformed.json()["detail"]
            assert "cannot be read" in detail and "Invalid bucket name" in detail


async def test_fine_tuned_model_downloads_are_presigned_s3_urls(
    bucket: str, s3_endpoint: str, database_url: str, tmp_path: Path
) -> None:
    settings = _s3_settings(bucket, s3_endpoint, database_url, tmp_path)
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
