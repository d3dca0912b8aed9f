"""Files: upload data sets once (batch prompts, training CSVs) and refer to them by id."""

from __future__ import annotations

from typing import IO, Any

from llmengine import _transport
from llmengine._core.request_specs import auth_headers, build_url
from llmengine._core.responses import error_from_response, parse_body
from llmengine.api_engine import get_api_key, get_base_path
from llmengine.job_types import (
    DeleteFileResponse,
    GetFileContentResponse,
    GetFileResponse,
    ListFilesResponse,
    UploadFileResponse,
)

UPLOAD_TIMEOUT = 600  # seconds: data sets can be large


class File:
    """Files of the caller's tenant. Signatures match the published ``scale-llm-engine`` client."""

    @classmethod
    def upload(cls, file: IO[bytes] | IO[str]) -> UploadFileResponse:
        """Upload an open file (``open(path, "rb")``); answers its id. Not retried: an upload is not idempotent."""
        name = getattr(file, "name", "upload")
        content: Any = file  # text-mode files too, as the published client accepts them
        response = _transport.sync_client().post(
            build_url(get_base_path(), "v1/files"),
            files={"file": (str(name).rsplit("/", 1)[-1], content)},
            headers=auth_headers(get_api_key()),
            timeout=UPLOAD_TIMEOUT,
        )
        if not response.is_success:
            raise error_from_response(response.status_code, response.content)
        return parse_body(response.content, UploadFileResponse)

    @classmethod
    def get(cls, file_id: str) -> GetFileResponse:
        """The file's id, name and size in bytes."""
        return _transport.request_model("GET", f"v1/files/{file_id}", GetFileResponse)

    @classmethod
    def list(cls) -> ListFilesResponse:
        """Every file of the caller's tenant."""
        return _transport.request_model("GET", "v1/files", ListFilesResponse, timeout=30)

    @classmethod
    def delete(cls, file_id: str) -> DeleteFileResponse:
        """Remove the file: its record and its bytes."""
        return _transport.request_model("DELETE", f"v1/files/{file_id}", DeleteFileResponse)

    @classmethod
    def download(cls, file_id: str) -> GetFileContentResponse:
        """The file's content, as text."""
        return _transport.request_model("GET", f"v1/files/{file_id}/content", GetFileContentResponse)
