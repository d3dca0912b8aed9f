"""The Files API as the published client calls it: upload, list, get, content, delete — per tenant, size-limited."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from model_engine_server.api.app import create_app
from model_engine_server.config import Settings
from tests.api.completion_support import RunningGateway
from tests.fakes import FakeResolver

A = ("team-a", "")
B = ("team-b", "")


def _stored_objects(settings_dir: Path) -> list[Path]:
    return [p for p in (settings_dir / "objects").rglob("*") if p.is_file()]


async def test_upload_list_get_content_delete(app_client: httpx.AsyncClient, settings: Settings) -> None:
    body = b'{"prompts": ["one", "two"]}'
    uploaded = await app_client.post("/v1/files", files={"file": ("prompts.json", body)}, auth=A)
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    assert file_id.startswith("file-")

    assert (await app_client.get(f"/v1/files/{file_id}", auth=A)).json() == {
        "id": file_id,
        "filename": "prompts.json",
        "size": len(body),
    }
    listed = (await app_client.get("/v1/files", auth=A)).json()
    assert listed == {"files": [{"id": file_id, "filename": "prompts.json", "size": len(body)}]}
    content = (await app_client.get(f"/v1/files/{file_id}/content", auth=A)).json()
    assert content == {"id": file_id, "content": body.decode()}

    assert (await app_client.delete(f"/v1/files/{file_id}", auth=A)).json() == {"deleted": True}
    assert (await app_client.get(f"/v1/files/{file_id}", auth=A)).status_code == 404
    assert _stored_objects(settings.data_dir) == []


async def test_other_tenants_files_are_not_found(app_client: httpx.AsyncClient) -> None:
    file_id = (await app_client.post("/v1/files", files={"file": ("a.txt", b"secret")}, auth=A)).json()["id"]
    for response in (
        await app_client.get(f"/v1/files/{file_id}", auth=B),
        await app_client.get(f"/v1/files/{file_id}/content", auth=B),
        await app_client.delete(f"/v1/files/{file_id}", auth=B),
    ):
        assert response.status_code == 404
        assert file_id in response.json()["detail"]
    assert (await app_client.get("/v1/files", auth=B)).json() == {"files": []}
    assert (await app_client.get(f"/v1/files/{file_id}", auth=A)).status_code == 200


@pytest.fixture
async def small_limit_gateway(settings: Settings) -> httpx.AsyncClient:
    limited = settings.model_copy(update={"file_max_bytes": 1000})
    app = create_app(limited, resolver=FakeResolver())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            yield c


async def test_uploads_past_the_limit_are_413_and_leave_nothing(
    small_limit_gateway: httpx.AsyncClient, settings: Settings
) -> None:
    response = await small_limit_gateway.post("/v1/files", files={"file": ("big.bin", b"x" * 5000)}, auth=A)
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]
    assert (await small_limit_gateway.get("/v1/files", auth=A)).json() == {"files": []}
    assert _stored_objects(settings.data_dir) == []
    ok = await small_limit_gateway.post("/v1/files", files={"file": ("small.bin", b"x" * 900)}, auth=A)
    assert ok.status_code == 200


async def test_upload_without_a_file_field_is_400(app_client: httpx.AsyncClient) -> None:
    response = await app_client.post("/v1/files", data={"other": "x"}, files={"wrong": ("a", b"b")}, auth=A)
    assert response.status_code == 400
    assert "`file`" in response.json()["detail"]


async def test_an_upload_cut_off_half_way_leaves_nothing(gateway: RunningGateway, settings: Settings) -> None:
    """The client's connection drops after half the bytes: no record, no object; the next upload is unaffected."""
    url = urlsplit(gateway.url)
    boundary = "cut-off-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="half.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    declared = len(head) + 400_000 + len(f"\r\n--{boundary}--\r\n")
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        (
            f"POST /v1/files HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Basic dGVhbS1hOg==\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + head
        + b"x" * 200_000
    )
    await writer.drain()
    writer.close()  # half the file sent, then the connection is gone
    await writer.wait_closed()
    del reader

    async with gateway.client(auth=A) as client:
        whole = await client.post("/v1/files", files={"file": ("whole.bin", b"y" * 1000)})
        assert whole.status_code == 200, whole.text
        listed = (await client.get("/v1/files")).json()["files"]
    assert [f["filename"] for f in listed] == ["whole.bin"]
    assert [p.name for p in _stored_objects(settings.data_dir)] == [whole.json()["id"]]
