"""A real HTTP server on 127.0.0.1 that answers from a script, for what a healthy gateway never does on demand.

Retries after 429/503, read timeouts, bodies split mid-character, a stream abandoned by the client: the SDK's
transport is exercised over real sockets, with every request it sent recorded for the test to inspect.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    # When set, the body is these pieces, each written and flushed on its own, `pause` seconds apart.
    chunks: list[bytes] | None = None
    pause: float = 0.0
    # Stop answering after this many body pieces (0: before the status line) until the test is over, so a client's
    # read timeout expires however slow the machine is. None answers in full.
    stall_after: int | None = None
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class ScriptedServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.received: list[Received] = []
        self.abandoned = 0  # responses the client hung up on
        self._lock = threading.Condition()
        self._released = threading.Event()  # ends every stall when the server stops
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def wait_abandoned(self, count: int, timeout: float = 10.0) -> None:
        """Block until the client has hung up on ``count`` responses; fail after ``timeout`` seconds."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.abandoned >= count, timeout):
                raise AssertionError(f"the client hung up on {self.abandoned} responses, not {count}, in {timeout}s")

    def stall(self) -> None:
        self._released.wait()

    def note_abandoned(self) -> None:
        with self._lock:
            self.abandoned += 1
            self._lock.notify_all()

    def next_reply(self, received: Received) -> Reply:
        with self._lock:
            self.received.append(received)
            if self.replies:
                return self.replies.popleft()
        return Reply(status=500, body=b'{"detail": "the test scripted no reply for this request"}')


def _handler_for(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 style: the body ends when the connection closes, so chunks can be streamed without framing.
        protocol_version = "HTTP/1.0"

        def log_message(self, *_: Any) -> None:  # keep test output clean
            return None

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = server.next_reply(Received(self.command, self.path, headers, body))
            if reply.stall_after == 0:
                server.stall()
            try:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.chunks is None:
                    self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                for sent, piece in enumerate(reply.chunks if reply.chunks is not None else [reply.body], start=1):
                    self.wfile.write(piece)
                    self.wfile.flush()
                    if sent == reply.stall_after:
                        server.stall()
                    time.sleep(reply.pause)
            except (BrokenPipeError, ConnectionResetError):
                server.note_abandoned()

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
