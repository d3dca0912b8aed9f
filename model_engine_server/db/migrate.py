"""Apply or revert the Alembic migrations in ``migrations/`` (the only way the schema changes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision``. Safe to call from inside a running event loop."""
    _in_thread_if_loop_running(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str) -> None:
    _in_thread_if_loop_running(lambda: command.downgrade(alembic_config(database_url), revision))


def _in_thread_if_loop_running(action: Callable[[], None]) -> None:
    # env.py drives the async engine with asyncio.run, which cannot nest inside a running loop.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        action()
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
