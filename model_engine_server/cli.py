"""The ``model-engine`` command line: thin commands that parse options and call one operation each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from model_engine_server.config import AuthMode, Settings, load_settings
from model_engine_server.db import migrate as migrations
from model_engine_server.db.repositories import ApiKeyStore, EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.exceptions import DomainError
from model_engine_server.domain.rules import is_loopback_host
from model_engine_server.fine_tune_cli import fine_tune_run, fine_tunes_app
from model_engine_server.inference.server.cli import inference_server
from model_engine_server.job_cli import batch_run, jobs_app

app = typer.Typer(
    name="model-engine",
    help="LLM Engine: deploy large language models and serve completions.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
keys_app = typer.Typer(help="Create, list and revoke API keys (auth mode [bold]keys[/bold]).", no_args_is_help=True)
endpoints_app = typer.Typer(help="Inspect model endpoints in the registry.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(endpoints_app, name="endpoints")
app.command("inference-server")(inference_server)
app.command("batch-run")(batch_run)
app.command("fine-tune-run")(fine_tune_run)
app.add_typer(jobs_app, name="jobs")
app.add_typer(fine_tunes_app, name="fine-tunes")

console = Console()
T = TypeVar("T")

HostOption = Annotated[str | None, typer.Option(help="Address to bind (default: LLM_ENGINE_HOST or 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(help="Port to bind (default: LLM_ENGINE_PORT or 5000).")]


def settings_or_exit(**overrides: object) -> Settings:
    """Settings from the environment plus command-line overrides; invalid settings end the command with the reasons."""
    try:
        settings = load_settings()
        values = {key: value for key, value in overrides.items() if value is not None}
        return settings.model_copy(update=values) if values else settings
    except ValidationError as exc:
        console.print(f"[red]Invalid settings:[/red]\n{exc}")
        raise typer.Exit(2) from None


def check_bind_address(settings: Settings) -> None:
    """Open auth hands every caller its own tenant, so it is only allowed where only this machine can connect."""
    if settings.auth_mode is AuthMode.OPEN and not is_loopback_host(settings.host):
        console.print(
            f"[red]Refusing to listen on {settings.host} with LLM_ENGINE_AUTH_MODE=open.[/red] Open auth accepts any "
            "key, so it is only allowed on a loopback address. Use LLM_ENGINE_AUTH_MODE=keys and create keys with "
            "`model-engine keys create --owner TEAM`."
        )
        raise typer.Exit(2)


def run_with_registry(settings: Settings, action: Callable[[EndpointRegistry, ApiKeyStore], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            sessions = create_session_factory(engine)
            return await action(EndpointRegistry(sessions), ApiKeyStore(sessions))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision; 'head' is the newest.")] = "head",
) -> None:
    """Apply the database migrations (run before starting a new version)."""
    settings = settings_or_exit()
    console.print(f"Migrating the registry to [bold]{revision}[/bold] …")
    migrations.upgrade(settings.database_url, revision)
    console.print("[green]Database schema is up to date.[/green]")


def _platform_logging() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health check would drown everything else


@app.command()
def serve(
    host: HostOption = None,
    port: PortOption = None,
    worker: Annotated[bool, typer.Option(help="Also run the async completion worker.")] = True,
) -> None:
    """Run the whole platform on this machine: gateway, orchestrator, async worker and the demo model.

    Embedded defaults: the registry and the task broker are SQLite files in LLM_ENGINE_DATA_DIR and every endpoint
    is served by inference-server processes on this machine. The demo endpoint (LLM_ENGINE_DEMO_MODEL) is created
    when absent. Ctrl-C stops everything.
    """
    from model_engine_server.runtime import StartupError, serve_platform, worker_command

    settings = settings_or_exit(host=host, port=port)
    check_bind_address(settings)
    _platform_logging()
    try:
        asyncio.run(serve_platform(settings, console, worker_argv=worker_command() if worker else None))
    except StartupError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@app.command("orchestrator")
def orchestrator_command() -> None:
    """Run the reconciler and orchestrator alone (on Kubernetes; with replicas, the Lease holder reconciles)."""
    from model_engine_server.runtime import run_orchestrator

    settings = settings_or_exit()
    _platform_logging()
    asyncio.run(run_orchestrator(settings))


@app.command()
def gateway(host: HostOption = None, port: PortOption = None) -> None:
    """Run the gateway API alone (on Kubernetes; on one machine use [bold]model-engine serve[/bold])."""
    import uvicorn

    from model_engine_server.api.app import create_app
    from model_engine_server.orchestration.factory import build_orchestrator

    settings = settings_or_exit(host=host, port=port)
    check_bind_address(settings)
    logging.basicConfig(level=logging.INFO)
    application = create_app(settings, orchestrator=build_orchestrator(settings))
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info", proxy_headers=True)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Tasks run at once (threads); default LLM_ENGINE_ASYNC_WORKER_CONCURRENCY.")
    ] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated endpoint names to serve; default: every endpoint.")
    ] = None,
) -> None:
    """Run an async completion worker (Celery) that consumes the endpoints' task queues."""
    from model_engine_server.config import OrchestratorKind
    from model_engine_server.domain.ports import UpstreamResolver
    from model_engine_server.tasks.runtime import OrchestratorResolver
    from model_engine_server.tasks.worker import parse_endpoint_names, run_worker

    settings = settings_or_exit()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    resolver: UpstreamResolver | None = None  # default: the local orchestrator's replicas, from its state file
    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.factory import build_orchestrator

        resolver = OrchestratorResolver(build_orchestrator(settings))
    run_worker(settings, concurrency=concurrency, endpoint_names=parse_endpoint_names(queues), resolver=resolver)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="The tenant the key acts as.")],
    description: Annotated[str, typer.Option(help="A note to tell keys apart.")] = "",
) -> None:
    """Create an API key. The key is printed once and stored only as a hash."""
    settings = settings_or_exit()
    key, record = run_with_registry(settings, lambda _e, keys: keys.create(owner, description))
    console.print(
        f"Created key [bold]{record.id}[/bold] for owner [bold]{owner}[/bold]. Store it now; it is not shown again:"
    )
    print(key)  # noqa: T201 (plain stdout so scripts can capture the key)


@keys_app.command("list")
def keys_list(owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None) -> None:
    """List API keys (ids, owners and prefixes; never the keys)."""
    settings = settings_or_exit()
    records = run_with_registry(settings, lambda _e, keys: keys.list(owner))
    table = Table("id", "owner", "prefix", "created", "revoked", "description")
    for key in records:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        created = key.created_at.isoformat(timespec="seconds")
        table.add_row(key.id, key.owner, key.prefix + "…", created, revoked, key.description)
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")]) -> None:
    """Revoke an API key; requests with it are refused from now on."""
    settings = settings_or_exit()
    record = run_with_registry(settings, lambda _e, keys: keys.revoke(key_id))
    console.print(f"Revoked key [bold]{record.id}[/bold] of owner [bold]{record.owner}[/bold].")


@endpoints_app.command("list")
def endpoints_list() -> None:
    """List every model endpoint in the registry, of all owners, with its observed state."""
    settings = settings_or_exit()
    endpoints = run_with_registry(settings, lambda registry, _k: registry.list_all())
    table = Table("name", "owner", "model", "framework", "status", "workers (ready/wanted)", "reason")
    for e in endpoints:
        workers = f"{e.available_workers}/{e.config.min_workers}-{e.config.max_workers}"
        table.add_row(
            e.name,
            e.owner,
            e.config.model_name,
            e.config.inference_framework.value,
            e.status.value,
            workers,
            e.status_reason or "",
        )
    console.print(table)
