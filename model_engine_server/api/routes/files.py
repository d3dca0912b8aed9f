"""``/v1/files``: upload, list, read and delete files, each tenant only its own."""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from model_engine_server.api.deps import CallerDep
from model_engine_server.api.job_services import FilesAndJobsDep
from model_engine_server.api.limits import file_too_large
from model_engine_server.db.file_registry import new_file_id
from model_engine_server.domain.exceptions import InvalidRequestError, NotFoundError, PayloadTooLargeError
from model_engine_server.domain.files import StoredFile
from model_engine_server.storage.locations import open_location
from model_engine_server.storage.port import ObjectNotFoundError

UPLOAD_PATH = "/v1/files"  # POST: its body streams to the route (api/limits.py)
router = APIRouter(prefix=UPLOAD_PATH, tags=["files"])


class UploadFileResponse(BaseModel):
    id: str


class FileResponse(BaseModel):
    id: str
    filename: str
    size: int

    @classmethod
    def of(cls, stored: StoredFile) -> FileResponse:
        return cls(id=stored.id, filename=stored.filename, size=stored.size)


class ListFilesResponse(BaseModel):
    files: list[FileResponse]


class FileContentResponse(BaseModel):
    id: str
    content: str


class DeleteFileResponse(BaseModel):
    deleted: bool


def _tenant_prefix(owner: str) -> str:
    return "files/" + hashlib.sha256(owner.encode()).hexdigest()[:32]


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post(
    "",
    response_model=UploadFileResponse,
    openapi_extra=_UPLOAD_BODY,  # read by hand (request.form), streamed by the request limits up to the file limit
    responses={400: {"description": "No `file` field."}, 413: {"description": "Over LLM_ENGINE_FILE_MAX_BYTES."}},
)
async def upload_file(request: Request, caller: CallerDep, services: FilesAndJobsDep) -> UploadFileResponse:
    # The request limits (api/limits.py) stream this body here: a declared or received size over the limit (plus the
    # multipart framing) and a stalled client are refused while it is read.
    limit = services.settings.file_max_bytes
    form = await request.form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("Send the file as multipart/form-data in the field `file`.")
        if upload.size is not None and upload.size > limit:
            raise PayloadTooLargeError(file_too_large(limit))
        file_id = new_file_id()
        key = f"{_tenant_prefix(caller)}/{file_id}"
        size = await asyncio.to_thread(services.store.put_file, key, upload.file)
        if size > limit:  # no declared size: counted while storing
            await asyncio.to_thread(services.store.delete, key)
            raise PayloadTooLargeError(file_too_large(limit))
        location = f"{services.store.url}/{key}"
        try:
            await services.files.create(
                file_id=file_id, owner=caller, filename=(upload.filename or file_id)[:256], size=size, location=location
            )
        except BaseException:
            await asyncio.to_thread(services.store.delete, key)  # no bytes without a record
            raise
    finally:
        await form.close()
    return UploadFileResponse(id=file_id)


@router.get("", response_model=ListFilesResponse)
async def list_files(caller: CallerDep, services: FilesAndJobsDep) -> ListFilesResponse:
    return ListFilesResponse(files=[FileResponse.of(f) for f in await services.files.list_owned(caller)])


@router.get("/{file_id}", response_model=FileResponse)
async def get_file(file_id: str, caller: CallerDep, services: FilesAndJobsDep) -> FileResponse:
    return FileResponse.of(await services.files.get_owned(file_id, caller))


@router.get("/{file_id}/content", response_model=FileContentResponse)
async def get_file_content(file_id: str, caller: CallerDep, services: FilesAndJobsDep) -> FileContentResponse:
    stored = await services.files.get_owned(file_id, caller)
    return FileContentResponse(id=stored.id, content=(await read_file_bytes(services, stored)).decode(errors="replace"))


@router.delete("/{file_id}", response_model=DeleteFileResponse)
async def delete_file(file_id: str, caller: CallerDep, services: FilesAndJobsDep) -> DeleteFileResponse:
    stored = await services.files.get_owned(file_id, caller)
    await services.files.remove(stored.id)  # the record first: a failure below leaves bytes nobody can name
    store, key = open_location(stored.location, services.storage)
    await asyncio.to_thread(store.delete, key)
    return DeleteFileResponse(deleted=True)


async def read_file_bytes(services: FilesAndJobsDep, stored: StoredFile) -> bytes:
    store, key = open_location(stored.location, services.storage)
    try:
        return await asyncio.to_thread(store.get, key)
    except ObjectNotFoundError:
        raise NotFoundError(f"The content of file {stored.id!r} is gone from object storage.") from None
