"""The ``model-engine`` command line: thin commands that parse options and call one operation each."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from model_engine_server.config import AuthMode, Settings, load_settings
from model_engine_server.db import migrate as migrations
from model_engine_server.db.models import utcnow
from model_engine_server.db.repositories import ApiKeyStore, EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.db.tenancy import TenantLimitStore
from model_engine_server.domain.exceptions import DomainError
from model_engine_server.domain.rules import is_loopback_host
from model_engine_server.domain.tenancy import TenantLimitOverrides
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
tenants_app = typer.Typer(help="Show and override tenants' limits (docs/tenancy.md).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
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


def run_with_sessions(settings: Settings, action: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await action(create_session_factory(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None


def run_with_registry(settings: Settings, action: Callable[[EndpointRegistry, ApiKeyStore], Awaitable[T]]) -> T:
    return run_with_sessions(settings, lambda sessions: action(EndpointRegistry(sessions), ApiKeyStore(sessions)))


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
    from model_engine_server.runtime.errors import StartupError
    from model_engine_server.runtime.serve import serve_platform, worker_command

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
    from model_engine_server.runtime.leadership import run_orchestrator

    settings = settings_or_exit()
    _platform_logging()
    asyncio.run(run_orchestrator(settings))


@app.command()
def gateway(host: HostOption = None, port: PortOption = None) -> None:
    """Run the gateway API alone (on Kubernetes; on one machine use [bold]model-engine serve[/bold])."""
    import uvicorn

    from model_engine_server.api.app import create_app
    from model_engine_server.orchestration.factory import build_upstream_resolver

    settings = settings_or_exit(host=host, port=port)
    check_bind_address(settings)
    logging.basicConfig(level=logging.INFO)
    application = create_app(settings, resolver=build_upstream_resolver(settings))
    uvicorn.run(application, host=settings.host, port=settings.port, log_level="info", proxy_headers=True)


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Tasks run at once (threads); default LLM_ENGINE_ASYNC_WORKER_CONCURRENCY.")
    ] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated endpoint names to serve; default: every endpoint.")
    ] = None,
    exit_with_parent: Annotated[
        bool, typer.Option(help="Shut down (warm) when the process that started this one is gone.")
    ] = False,
) -> None:
    """Run an async completion worker (Celery) that consumes the endpoints' task queues."""
    from model_engine_server.orchestration.factory import build_upstream_resolver
    from model_engine_server.tasks.worker import parse_endpoint_names, run_worker

    settings = settings_or_exit()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    resolver = build_upstream_resolver(settings)  # the orchestrator runs in another process
    names = parse_endpoint_names(queues)
    run_worker(settings, resolver, concurrency=concurrency, endpoint_names=names, exit_with_parent=exit_with_parent)


@keys_app.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="The tenant the key acts as.")],
    label: Annotated[str, typer.Option("--label", "--description", help="A note to tell keys apart.")] = "",
    admin: Annotated[bool, typer.Option(help="May manage every tenant's keys and limits.")] = False,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.001, help="The key stops working after this many days.")
    ] = None,
) -> None:
    """Create an API key. The key is printed once and stored only as a hash."""
    settings = settings_or_exit()
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    key, record = run_with_registry(
        settings, lambda _e, keys: keys.create(owner, label, admin=admin, expires_at=expires_at)
    )
    console.print(
        f"Created key [bold]{record.id}[/bold] for owner [bold]{owner}[/bold]. Store it now; it is not shown again:"
    )
    print(key)  # noqa: T201 (plain stdout so scripts can capture the key)


def _moment(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="Only this owner's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List API keys (whole ids, owners and prefixes; never the keys). Ids are printed in full at any width."""
    settings = settings_or_exit()
    records = run_with_registry(settings, lambda _e, keys: keys.list(owner))
    rows = [
        {
            "id": k.id,
            "owner": k.owner,
            "prefix": k.prefix,
            "admin": k.admin,
            "created_at": _moment(k.created_at),
            "expires_at": _moment(k.expires_at) or None,  # JSON null when the key never expires / is not revoked
            "revoked_at": _moment(k.revoked_at) or None,
            "label": k.description,
        }
        for k in records
    ]
    if as_json:
        print(json.dumps(rows, indent=2))  # noqa: T201 (plain stdout for scripts)
        return
    # Plain aligned columns rather than a rich table: a table squeezes and truncates ids in a narrow terminal or a
    # pipe, and an id must survive being copied into `keys revoke`.
    header = {"id": "id", "owner": "owner", "prefix": "prefix", "admin": "admin", "created_at": "created"}
    header |= {"expires_at": "expires", "revoked_at": "revoked", "label": "label"}
    table = [header] + [{**row, "admin": "yes" if row["admin"] else "", "prefix": f"{row['prefix']}…"} for row in rows]
    widths = {column: max(len(str(line[column] or "")) for line in table) for column in header}
    for line in table:
        print("  ".join(str(line[c] or "").ljust(widths[c]) for c in header).rstrip())  # noqa: T201


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")]) -> None:
    """Revoke an API key; every gateway refuses it within a second."""
    settings = settings_or_exit()
    record = run_with_registry(settings, lambda _e, keys: keys.revoke(key_id))
    console.print(f"Revoked key [bold]{record.id}[/bold] of owner [bold]{record.owner}[/bold].")


LimitOption = Annotated[int | None, typer.Option(min=0, help="0 = unlimited; omitted = unchanged.")]


@tenants_app.command("set-limits")
def tenants_set_limits(
    tenant: Annotated[str, typer.Argument(help="The tenant (the owner its keys act as).")],
    requests_per_minute: LimitOption = None,
    tokens_per_minute: LimitOption = None,
    max_concurrent_requests: LimitOption = None,
    max_endpoints: LimitOption = None,
    max_jobs: LimitOption = None,
    priority: Annotated[int | None, typer.Option(min=1, help="Fair-queueing weight (default 1).")] = None,
    reset: Annotated[bool, typer.Option(help="Drop the tenant's overrides first (back to the defaults).")] = False,
) -> None:
    """Override a tenant's limits (the defaults come from LLM_ENGINE_TENANT_*); gateways apply them within a second."""
    settings = settings_or_exit()
    given = {
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "max_concurrent_requests": max_concurrent_requests,
        "max_endpoints": max_endpoints,
        "max_jobs": max_jobs,
        "priority": priority,
    }

    async def update(store: TenantLimitStore) -> TenantLimitOverrides:
        current = None if reset else await store.get(tenant)
        changes = {name: value for name, value in given.items() if value is not None}
        return await store.set(tenant, {**(current or {}), **changes})

    overrides = run_with_sessions(settings, lambda sessions: update(TenantLimitStore(sessions)))
    _print_limits(tenant, overrides, settings)


@tenants_app.command("show")
def tenants_show(tenant: Annotated[str, typer.Argument(help="The tenant (the owner its keys act as).")]) -> None:
    """A tenant's limits: its overrides and what applies."""
    settings = settings_or_exit()
    overrides = run_with_sessions(settings, lambda sessions: TenantLimitStore(sessions).get(tenant))
    _print_limits(tenant, overrides, settings)


def _print_limits(tenant: str, overrides: TenantLimitOverrides | None, settings: Settings) -> None:
    effective = settings.tenant_limits().with_overrides(overrides)
    console.print(f"Limits of tenant [bold]{tenant}[/bold] (0 = unlimited):")
    for name, value in asdict(effective).items():
        source = "override" if name in (overrides or {}) else "default"
        console.print(f"  {name:24} {value:>10}  ({source})")


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
