"""The Celery application, built from Settings by the gateway (to enqueue and read results) and by the worker.

Broker and result backend: Redis when ``broker_url`` is a redis URL; otherwise the embedded broker (the SQLAlchemy
transport with leases, ``embedded_broker.py``) and Celery's database result backend, both SQLite files in data_dir.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy.engine import make_url

from model_engine_server.config import Settings
from model_engine_server.tasks import embedded_broker
from model_engine_server.tasks.policy import IDLE_QUEUE, PUBLISH_RETRIES, WORKER_RESULT_STORE_WAIT_SECONDS

_REDIS_SCHEMES = ("redis://", "rediss://")


def uses_redis(url: str) -> bool:
    return url.startswith(_REDIS_SCHEMES)


# A finished task whose result cannot be stored is lost to its caller: the worker retries (jittered backoff up to
# 2 s, WORKER_RESULT_STORE_WAIT_SECONDS in all) until the result store is back, where a submit answers 503 at once.
_WORKER_RESULT_RETRIES = {
    "result_backend_always_retry": True,
    "result_backend_max_retries": int(WORKER_RESULT_STORE_WAIT_SECONDS),
    "result_backend_base_sleep_between_retries_ms": 200,
    "result_backend_max_sleep_between_retries_ms": 2000,
}


def create_celery_app(settings: Settings, *, worker: bool = False) -> Celery:
    """A Celery app for ``settings``. Connects to nothing until it is used. ``worker``: the app a worker runs, which
    waits out a result store outage instead of failing fast like a submit."""
    embedded_broker.configure(
        lease_seconds=settings.async_task_visibility_timeout_seconds,
        polling_seconds=settings.embedded_broker_polling_seconds,
    )
    _prepare_sqlite_files(settings)
    app = Celery(
        "llm-engine",
        broker=embedded_broker.leased_broker_url(settings.broker_url),
        backend=settings.result_backend_url,
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Acknowledge after the task ran: a worker that dies mid-task leaves its message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # a worker holds no more messages than it has free slots
        task_track_started=True,  # STARTED is part of the API
        result_expires=timedelta(seconds=settings.async_task_result_ttl_seconds),
        result_extended=True,  # date_done etc., used by the benchmark
        task_default_queue=IDLE_QUEUE,
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": PUBLISH_RETRIES,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # No broadcast: the embedded transport has no fanout, and nothing here uses remote control or events.
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        **_transport_options(settings),
        **(_WORKER_RESULT_RETRIES if worker else {}),
    )
    return app


def _transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if uses_redis(settings.broker_url):
        timeout = settings.async_task_visibility_timeout_seconds
        options["broker_transport_options"] = {
            # A message whose index entry is older than this goes back to its queue. Workers renew the entries of
            # the tasks they hold (tasks/worker.py), so only a lost worker's messages age past it.
            "visibility_timeout": timeout,
            "unacked_restore_interval": max(1, timeout // 4),
            "unacked_restore_throttle": 1,
            "global_keyprefix": settings.broker_key_prefix,
            "socket_connect_timeout": 3,
        }
    else:
        options["broker_transport_options"] = {"connect_args": {"timeout": 30}}  # SQLite busy timeout
    if uses_redis(settings.result_backend_url):
        options["result_backend_transport_options"] = {
            "global_keyprefix": settings.broker_key_prefix,
            # Celery's default retries a lost Redis 20 times a second apart, inside the submit: the caller would
            # wait 20 s for a 503. Two quick tries, then the submit answers that the broker is unreachable.
            "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        }
        options["redis_socket_connect_timeout"] = 3
        options["redis_socket_timeout"] = 10
        options["redis_retry_on_timeout"] = True
    else:
        options["database_engine_options"] = {"connect_args": {"timeout": 30}}
    return options


def _prepare_sqlite_files(settings: Settings) -> None:
    """The embedded broker and result files: create their directory and switch them to WAL (readers and the
    writer no longer block each other; the setting is stored in the file)."""
    for url in (settings.broker_url, settings.result_backend_url):
        path = _sqlite_path(url)
        if path is None:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=30)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()


def _sqlite_path(url: str) -> Path | None:
    for prefix in ("sqla+", "sqlalchemy+", "db+"):
        if url.startswith(prefix):
            parsed = make_url(url[len(prefix) :])
            if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
                return Path(parsed.database)
    return None
