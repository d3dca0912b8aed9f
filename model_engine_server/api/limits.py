"""Request limits, checked before any route runs: header and query sizes, body size, and how long a client may take
to send its body. Each refusal is the route's ordinary error — ``{"detail"}``, or OpenAI's ``{"error"}`` envelope on
the OpenAI routes — and closes the connection.

The body is read here in full (at most ``max_body_bytes``, within ``body_timeout_seconds``) and handed to the app
from memory, so a client that trickles its body ties up one coroutine for at most the timeout, never a route.
File uploads (``upload_paths``) are the exception: they stream to the route, up to the file size limit (plus the
multipart framing), and a client that sends nothing for ``body_timeout_seconds`` is cut off (408).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_engine_server.api.openai_errors import openai_error
from model_engine_server.config import Settings
from model_engine_server.domain.exceptions import PayloadTooLargeError, RequestTimeoutError

MULTIPART_FRAMING_BYTES = 64 * 1024  # what a multipart upload adds around its file, at most


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _ClientGone(Exception):
    pass


def _check_no_repeated_parameter(query: bytes) -> None:
    """Every query parameter of this API is a single value: a repeated one would silently keep only the last."""
    names = [name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _Refused(400, f"Query parameter {repeated[0]!r} is given more than once; give it once.")


def file_too_large(limit: int) -> str:
    """The 413 message for an upload over the file limit, wherever it is found out (declared, streamed, stored)."""
    return f"The file is larger than the limit of {limit} bytes."


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_seconds: float
    max_header_bytes: int
    max_query_bytes: int
    max_file_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.max_request_body_bytes,
            body_timeout_seconds=settings.request_body_timeout_seconds,
            max_header_bytes=settings.max_request_header_bytes,
            max_query_bytes=settings.max_query_string_bytes,
            max_file_bytes=settings.file_max_bytes,
        )

    @property
    def _max_upload_bytes(self) -> int:
        return self.max_file_bytes + MULTIPART_FRAMING_BYTES

    def check_head(self, scope: Scope) -> None:
        query = len(scope.get("query_string", b""))
        if query > self.max_query_bytes:
            raise _Refused(414, f"The query string is {query} bytes; at most {self.max_query_bytes} are accepted.")
        _check_no_repeated_parameter(scope.get("query_string", b""))
        headers = sum(len(name) + len(value) for name, value in scope["headers"])
        if headers > self.max_header_bytes:
            raise _Refused(
                431, f"The request headers are {headers} bytes; at most {self.max_header_bytes} are accepted."
            )

    def declared_length(self, scope: Scope, upload: bool = False) -> int | None:
        """The Content-Length, checked against the limit; None when the body is chunked or absent."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise _Refused(400, "Content-Length is not a number.") from None
                if upload and length > self._max_upload_bytes:
                    raise _Refused(413, file_too_large(self.max_file_bytes))
                if not upload and length > self.max_body_bytes:
                    raise _Refused(413, self._too_large())
                return length
        return None

    def metered(self, receive: Receive) -> Receive:
        """``receive`` for a streamed upload: at most the file limit (plus framing), and no pause in the body longer
        than the timeout. Its errors reach the route reading the body, which answers them (413, 408)."""
        size = 0
        complete = False

        async def metered() -> Message:
            nonlocal size, complete
            if complete:
                return await receive()  # only the disconnect is left to wait for
            try:
                async with asyncio.timeout(self.body_timeout_seconds):
                    message = await receive()
            except TimeoutError:
                seconds = self.body_timeout_seconds
                raise RequestTimeoutError(
                    f"The request body stalled: nothing arrived for {seconds:g} seconds."
                ) from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self._max_upload_bytes:
                    raise PayloadTooLargeError(file_too_large(self.max_file_bytes))
                complete = not message.get("more_body", False)
            return message

        return metered

    def _too_large(self) -> str:
        return f"The request body is over the limit of {self.max_body_bytes} bytes."

    async def read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise _Refused(413, self._too_large())
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            seconds = self.body_timeout_seconds
            raise _Refused(408, f"The request body was not received within {seconds:g} seconds.") from None


def _has_body(scope: Scope, declared: int | None) -> bool:
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class RequestLimits:
    """ASGI middleware enforcing ``Limits`` on every HTTP request. ``openai_paths`` match the OpenAI routes, whose
    refusals use OpenAI's envelope."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Limits,
        openai_paths: Sequence[re.Pattern[str]] = (),
        upload_paths: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.limits = limits
        self.openai_paths = tuple(openai_paths)
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and scope["path"] in self.upload_paths
        try:
            self.limits.check_head(scope)
            declared = self.limits.declared_length(scope, upload)
            if upload:
                await self.app(scope, self.limits.metered(receive), send)
                return
            if not _has_body(scope, declared):
                await self.app(scope, receive, send)
                return
            body = await self.limits.read_body(receive)
        except _Refused as refused:
            openai = any(pattern.match(scope["path"]) for pattern in self.openai_paths)
            await _refusal(refused, openai)(scope, receive, send)
            return
        except _ClientGone:
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, then the client's own messages (so a disconnect still reaches streaming routes)."""
    delivered = False

    async def replayed() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _refusal(refused: _Refused, openai: bool) -> Response:
    if openai:
        response = openai_error(refused.status, refused.detail)
    else:
        response = JSONResponse({"detail": refused.detail}, status_code=refused.status)
    response.headers["connection"] = "close"
    return response
