"""The gateway's listening socket and its uvicorn server, as ``serve`` runs them."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from model_engine_server.runtime.errors import StartupError

GRACEFUL_SHUTDOWN_SECONDS = 10  # open requests (streams) get this long after Ctrl-C


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the gateway's address before anything starts, so a taken port fails fast with a clear message."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise StartupError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. "
            "Is another server using it? Choose another port with --port."
        ) from exc
    return sock


class GatewayServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve_platform`` owns SIGINT/SIGTERM (uvicorn's would
    re-raise the signal once the gateway stops, killing the process before the inference servers are stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
