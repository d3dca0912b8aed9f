"""A TGI ``/generate`` server whose answers a test scripts: a delay, a stall, or error statuses first.

Counts what a test needs to tell "completed once" from "ran twice": requests started, answered, and cut off by the
client (a killed worker closes its connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from model_engine_server.testing.serving import serving
from model_engine_server.testing.tgi import InstantTgiServer


@dataclass
class ScriptedTgi:
    delay: float = 0.0
    stall: bool = False  # never answer
    errors: list[int] = field(default_factory=list)  # statuses answered, in order, before the first success
    started: int = 0
    completed: int = 0
    cut_off: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                await self._answer(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(handler)
            writer.close()

    async def _answer(self, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.started += 1
        if self.errors:
            status = self.errors.pop(0)
            writer.write(_response(status, {"error": f"scripted {status}", "error_type": "scripted"}))
            await writer.drain()
            return
        waiting = asyncio.ensure_future(asyncio.sleep(3600 if self.stall else self.delay))
        closed = asyncio.ensure_future(reader.read(1))  # b"" when the client goes away
        done, _ = await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        closed.cancel()
        if closed in done:
            self.cut_off += 1
            raise ConnectionError("client went away")
        writer.write(_response(200, InstantTgiServer().generate_response(body)))
        await writer.drain()
        self.completed += 1


async def _read_request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    if not head:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    raw = await reader.readexactly(length) if length else b"{}"
    body: dict[str, Any] = orjson.loads(raw)
    return body


def _response(status: int, body: dict[str, Any]) -> bytes:
    content = orjson.dumps(body)
    return b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        len(content),
        content,
    )


def running_scripted_tgi(**options: Any) -> contextlib.AbstractAsyncContextManager[ScriptedTgi]:
    return serving(ScriptedTgi(**options))
