"""Request limits, checked before any route runs: header and query sizes, body size, and how long a client may take
to send its body. Each refusal is an ordinary ``{"detail"}`` error and closes the connection.

The body is read here in full (at most ``max_body_bytes``, within ``body_timeout_seconds``) and handed to the app
from memory, so a client that trickles its body ties up one coroutine for at most the timeout, never a route.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_engine_server.config import Settings


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


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    body_timeout_seconds: float
    max_header_bytes: int
    max_query_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.max_request_body_bytes,
            body_timeout_seconds=settings.request_body_timeout_seconds,
            max_header_bytes=settings.max_request_header_bytes,
            max_query_bytes=settings.max_query_string_bytes,
        )

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

    def declared_length(self, scope: Scope) -> int | None:
        """The Content-Length, checked against the limit; None when the body is chunked or absent."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise _Refused(400, "Content-Length is not a number.") from None
                if length > self.max_body_bytes:
                    raise _Refused(413, self._too_large())
                return length
        return None

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
    """ASGI middleware enforcing ``Limits`` on every HTTP request."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.limits.check_head(scope)
            declared = self.limits.declared_length(scope)
            if not _has_body(scope, declared):
                await self.app(scope, receive, send)
                return
            body = await self.limits.read_body(receive)
        except _Refused as refused:
            await _refuse(send, refused)
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


async def _refuse(send: Send, refused: _Refused) -> None:
    payload = orjson.dumps({"detail": refused.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
