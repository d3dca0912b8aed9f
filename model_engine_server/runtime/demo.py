"""The demo endpoint of ``model-engine serve``: created when absent, its loading shown until it is ready."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from model_engine_server.config import AuthMode, Settings
from model_engine_server.domain.endpoints import EndpointOperations
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import ConflictError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import EndpointStore
from model_engine_server.runtime.aio import until
from model_engine_server.runtime.control_plane import ControlPlane

log = logging.getLogger(__name__)

PROGRESS_POLL_SECONDS = 0.5


async def ensure_demo_endpoint(
    settings: Settings, registry: EndpointStore, on_change: Callable[[], None], zoo: ModelZoo
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
        await until(lambda: control.reconciler.passes > passes)
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


async def report_failures(work: Awaitable[None]) -> None:
    """Progress display is a nicety: its failure is logged, never fatal."""
    try:
        await work
    except Exception:
        log.exception("Showing the demo endpoint's progress failed")
