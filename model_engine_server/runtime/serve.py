"""``model-engine serve``: the whole platform on one machine.

Migrations, then in one process the gateway (uvicorn), the orchestrator and the reconciler, plus the async worker as a
child process; the demo endpoint is created when absent and its loading is shown. Ctrl-C (or SIGTERM) stops the
gateway, the worker and every inference server, in that order; a second Ctrl-C skips the wait for open requests.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from rich.console import Console
from sqlalchemy.engine import make_url

from model_engine_server.api.app import create_app
from model_engine_server.config import Settings
from model_engine_server.db import migrate as migrations
from model_engine_server.orchestration.local.supervisor import KeptRunning
from model_engine_server.runtime.aio import cancel, stop_signals, until
from model_engine_server.runtime.control_plane import ControlPlane
from model_engine_server.runtime.demo import report_failures, show_demo_progress
from model_engine_server.runtime.errors import StartupError
from model_engine_server.runtime.gateway_server import GRACEFUL_SHUTDOWN_SECONDS, GatewayServer, bind_socket

WORKER_STOP_GRACE_SECONDS = 15.0
WORKER_RESTART_DELAY_SECONDS = 5.0


async def serve_platform(settings: Settings, console: Console, worker_argv: Sequence[str] | None = None) -> None:
    """``model-engine serve``: everything on one machine, until SIGINT/SIGTERM."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sock = bind_socket(settings.host, settings.port)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    console.print(f"LLM Engine: data in [bold]{settings.data_dir}[/bold], registry migrations …")
    try:
        await asyncio.to_thread(migrations.upgrade, settings.database_url)
    except Exception as exc:  # unreachable database, bad URL, permissions: say which, without the password
        sock.close()
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        raise StartupError(f"Could not migrate the registry at {where}: {type(exc).__name__}: {exc}") from exc

    control = ControlPlane(settings)
    app = create_app(settings, resolver=control.resolver, on_registry_change=control.reconciler.poke)
    server = GatewayServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    worker = (
        KeptRunning(
            "async worker",
            worker_argv,
            settings.data_dir / "logs" / "worker.log",
            restart_delay=WORKER_RESTART_DELAY_SECONDS,
            stop_grace=WORKER_STOP_GRACE_SECONDS,
        )
        if worker_argv
        else None
    )

    def on_signal(_sig: int) -> None:
        if server.should_exit:
            server.force_exit = True  # second Ctrl-C: do not wait for open requests
        else:
            console.print("Stopping: gateway, worker, then the inference servers …")
        server.should_exit = True

    background: list[asyncio.Task[Any]] = []
    with stop_signals(on_signal):
        try:
            await control.start()
            background.append(asyncio.create_task(control.reconciler.run(), name="reconciler"))
            if worker is not None:
                worker.start()
            gateway = asyncio.create_task(server.serve(sockets=[sock]), name="gateway")
            await until(lambda: server.started or gateway.done())
            if server.started:
                background.append(
                    asyncio.create_task(
                        report_failures(show_demo_progress(settings, control, console, base_url)), name="progress"
                    )
                )
            await gateway
            if not server.started:
                raise StartupError("The gateway failed to start; its error is shown above.")
        finally:
            await cancel(*background)
            if worker is not None:
                await worker.stop()
            await control.close()
            sock.close()
    console.print("Stopped.")


def worker_command() -> list[str]:
    """How ``serve`` starts ``model-engine worker`` with this interpreter (no reliance on PATH)."""
    # --exit-with-parent: a `serve` that is killed (not stopped) must not leave its worker consuming tasks.
    command = [sys.executable, "-c", "from model_engine_server.cli import app; app(prog_name='model-engine')"]
    return [*command, "worker", "--exit-with-parent"]
