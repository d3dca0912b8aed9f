"""Running the platform: the process trees behind ``model-engine serve`` and ``model-engine orchestrator``.

``serve`` (one machine): migrations, then in one process the gateway (uvicorn), the orchestrator and the reconciler,
plus the async worker as a child process; the demo endpoint is created when absent and its loading is shown. Ctrl-C
(or SIGTERM) stops the gateway, the worker and every inference server, in that order; a second Ctrl-C skips the wait
for open requests.

``orchestrator`` (Kubernetes): the reconciler and orchestrator alone; with several replicas only the holder of the
Lease reconciles.

This is the composition root next to ``cli``: the only module that wires the API, the orchestrators and the registry
together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, OrchestratorKind, Settings
from model_engine_server.db import migrate as migrations
from model_engine_server.db.repositories import EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.endpoints import EndpointOperations
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import ConflictError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import Orchestrator
from model_engine_server.orchestration.factory import build_orchestrator
from model_engine_server.orchestration.job_hooks import build_job_reconciler
from model_engine_server.orchestration.reconciler import ReconcilePolicy, Reconciler

log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 10  # open requests (streams) get this long after Ctrl-C
WORKER_STOP_GRACE_SECONDS = 15.0
WORKER_RESTART_DELAY_SECONDS = 5.0
PROGRESS_POLL_SECONDS = 0.5


class StartupError(Exception):
    """The platform cannot start; the message says why and what to do."""


# --- the control plane: orchestrator + reconciler ------------------------------------------------------------------


class ControlPlane:
    """The registry, the orchestrator and the reconciler, started and stopped together."""

    def __init__(self, settings: Settings, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings
        self.database = create_engine(settings.database_url)
        sessions = create_session_factory(self.database)
        self.registry = EndpointRegistry(sessions)
        self.orchestrator = orchestrator or build_orchestrator(settings)
        self.jobs = build_job_reconciler(settings, sessions, self.orchestrator)
        self.reconciler = self.new_reconciler()
        self._started = False

    def new_reconciler(self) -> Reconciler:
        policy = ReconcilePolicy(self.settings.reconcile_interval_seconds)
        return Reconciler(self.registry, self.orchestrator, policy, jobs=self.jobs)

    async def start(self) -> None:
        await self.orchestrator.start()
        self._started = True

    async def close(self) -> None:
        """Stop the orchestrator (on one machine: every inference server) and release the database."""
        if self._started:
            await self.jobs.runner.close()
            await self.orchestrator.close()
            self._started = False
        await self.database.dispose()


async def _cancel(*tasks: asyncio.Task[Any]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(set(tasks))


# --- signals ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``on_signal`` (each time) instead of raising KeyboardInterrupt mid-cleanup."""
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


# --- the async worker as a child process ------------------------------------------------------------------------------


class ChildProcess:
    """A helper process (the Celery worker) kept running while the platform runs, and stopped with it."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name=f"child-{self.name}")

    async def _keep_running(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        while not self._stopping:
            with self.log_path.open("ab") as output:
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
                )
            code = await self._process.wait()
            if self._stopping:
                return
            log.warning(
                "The %s exited with code %s (log: %s); restarting in %.0fs",
                self.name,
                code,
                self.log_path,
                WORKER_RESTART_DELAY_SECONDS,
            )
            await asyncio.sleep(WORKER_RESTART_DELAY_SECONDS)

    async def stop(self) -> None:
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(WORKER_STOP_GRACE_SECONDS):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._task is not None:
            await _cancel(self._task)


# --- model-engine serve ----------------------------------------------------------------------------------------


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


async def ensure_demo_endpoint(
    settings: Settings, registry: EndpointRegistry, on_change: Callable[[], None], zoo: ModelZoo
) -> ModelEndpoint | None:
    """Create the demo endpoint (public, so any key may call it) unless an endpoint of that name exists."""
    name = settings.demo_model
    if not name:
        return None
    existing = next((e for e in await registry.list_all() if e.name == name), None)
    if existing is not None:
        return existing
    operations = EndpointOperations(registry, zoo, on_change)
    requested = {"model_name": name, "public_inference": True, "min_workers": 1, "max_workers": 1}
    try:
        return await operations.create(settings.bootstrap_owner, name, requested)
    except ConflictError:  # created concurrently
        return next((e for e in await registry.list_all() if e.name == name), None)


def _last_line(path: Path) -> str:
    try:
        with path.open("rb") as log_file:
            log_file.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in log_file.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    # Progress bars redraw with carriage returns: the text after the last one is what a terminal would show.
    return lines[-1].rsplit("\r", 1)[-1][:100] if lines else ""


def _usage_hint(settings: Settings, base_url: str, name: str) -> str:
    key = "anykey" if settings.auth_mode is AuthMode.OPEN else "YOUR_API_KEY"
    return (
        f"  curl -u {key}: -X POST '{base_url}/v1/llm/completions-sync?model_endpoint_name={name}' \\\n"
        "       -H 'Content-Type: application/json' "
        '-d \'{"prompt": "Once upon a time", "max_new_tokens": 40, "temperature": 0}\''
    )


async def show_demo_progress(settings: Settings, control: ControlPlane, console: Console, base_url: str) -> None:
    """Create the demo endpoint if needed and show its loading until it is READY or UPDATE_FAILED."""
    zoo = settings.model_zoo()
    endpoint = await ensure_demo_endpoint(settings, control.registry, control.reconciler.poke, zoo)
    if endpoint is None:
        console.print(f"Gateway ready on [bold]{base_url}[/bold]. Press Ctrl-C to stop.")
        return
    log_path = settings.data_dir / "logs" / "endpoints" / endpoint.name / "replica-0.log"
    with console.status(f"Starting [bold]{endpoint.name}[/bold] …") as status:
        passes = control.reconciler.passes
        # The registry's status may predate this start (READY from the last run): trust it after a fresh pass.
        await _until(lambda: control.reconciler.passes > passes)
        while True:
            current = await control.registry.get_by_id(endpoint.id)
            if current is None:
                return  # deleted meanwhile
            if current.status is EndpointStatus.READY:
                break
            if current.status is EndpointStatus.UPDATE_FAILED:
                reason = escape(current.status_reason or "")
                console.print(f"[red]✗ {escape(current.name)} failed to start:[/red] {reason}")
                console.print(f"The gateway keeps running on [bold]{base_url}[/bold]. Press Ctrl-C to stop.")
                return
            detail = _last_line(log_path)
            status.update(
                f"Loading [bold]{escape(current.name)}[/bold] ({current.status.value})"
                + (f": {escape(detail)}" if detail else "")
            )
            await asyncio.sleep(PROGRESS_POLL_SECONDS)
    console.print(f"[green]✓[/green] [bold]{escape(endpoint.name)}[/bold] is ready. Try it:")
    console.print(escape(_usage_hint(settings, base_url, endpoint.name)), soft_wrap=True)
    console.print(f"Gateway on [bold]{base_url}[/bold] · API docs {base_url}/docs · Press Ctrl-C to stop.")


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
    app = create_app(settings, orchestrator=control.orchestrator, on_registry_change=control.reconciler.poke)
    server = _GatewayServer(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    worker = (
        ChildProcess("async worker", worker_argv, settings.data_dir / "logs" / "worker.log") if worker_argv else None
    )

    def on_signal(_sig: int) -> None:
        if server.should_exit:
            server.force_exit = True  # second Ctrl-C: do not wait for open requests
        else:
            console.print("Stopping: gateway, worker, then the inference servers …")
        server.should_exit = True

    background: list[asyncio.Task[Any]] = []
    with _stop_signals(on_signal):
        try:
            await control.start()
            background.append(asyncio.create_task(control.reconciler.run(), name="reconciler"))
            if worker is not None:
                worker.start()
            gateway = asyncio.create_task(server.serve(sockets=[sock]), name="gateway")
            await _until(lambda: server.started or gateway.done())
            if server.started:
                background.append(
                    asyncio.create_task(
                        _report(show_demo_progress(settings, control, console, base_url)), name="progress"
                    )
                )
            await gateway
            if not server.started:
                raise StartupError("The gateway failed to start; its error is shown above.")
        finally:
            await _cancel(*background)
            if worker is not None:
                await worker.stop()
            await control.close()
            sock.close()
    console.print("Stopped.")


class _GatewayServer(uvicorn.Server):
    """uvicorn's server without its own signal handling: ``serve_platform`` owns SIGINT/SIGTERM (uvicorn's would
    re-raise the signal once the gateway stops, killing the process before the inference servers are stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _until(condition: Callable[[], bool], poll: float = 0.05) -> None:
    while not condition():
        await asyncio.sleep(poll)


async def _report(work: Awaitable[None]) -> None:
    """Progress display is a nicety: its failure is logged, never fatal."""
    try:
        await work
    except Exception:
        log.exception("Showing the demo endpoint's progress failed")


# --- model-engine orchestrator -----------------------------------------------------------------------------------


async def run_orchestrator(settings: Settings) -> None:
    """``model-engine orchestrator``: reconcile until SIGINT/SIGTERM; on Kubernetes only while holding the Lease."""
    stop = asyncio.Event()
    control = ControlPlane(settings)
    with _stop_signals(lambda _sig: stop.set()):
        try:
            await control.start()
            if settings.orchestrator is OrchestratorKind.KUBERNETES:
                await reconcile_while_leading(settings, control, stop)
            else:
                await _run_until(control.reconciler.run(), stop)
        finally:
            await control.close()


async def _run_until(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` until it ends or ``stop`` is set; whether ``work`` ended by itself."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finished = task.done()
        if finished:
            task.result()  # an error in the work surfaces here
        return finished
    finally:
        await _cancel(task, stopper)


async def reconcile_while_leading(
    settings: Settings, control: ControlPlane, stop: asyncio.Event, identity: str | None = None
) -> None:
    """Reconcile only while holding the Lease; stand by otherwise; give the Lease up when ``stop`` is set."""
    from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
    from model_engine_server.orchestration.kubernetes.leader import LeaseLeaderElector

    if not isinstance(control.orchestrator, KubernetesOrchestrator):
        await _run_until(control.reconciler.run(), stop)
        return
    identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaseLeaderElector(control.orchestrator.api, settings.kubernetes_leader_lease_name, identity)
    try:
        while not stop.is_set():
            log.info("%s waiting to lead (lease %s)", identity, settings.kubernetes_leader_lease_name)
            if not await _run_until(elector.acquire(), stop):
                return
            # A fresh reconciler per term: the previous leader may have changed things meanwhile.
            reconciler = control.new_reconciler()
            renewing = asyncio.create_task(elector.keep_renewing())
            await _run_until(_first_of(reconciler.run(), renewing), stop)
            await _cancel(renewing)
    finally:
        if elector.is_leader:
            await elector.release()


async def _first_of(*works: Awaitable[None]) -> None:
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await _cancel(*tasks)


def worker_command() -> list[str]:
    """How ``serve`` starts ``model-engine worker`` with this interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "from model_engine_server.cli import app; app(prog_name='model-engine')", "worker"]
