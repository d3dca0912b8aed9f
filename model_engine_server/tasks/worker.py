"""The async worker process: ``model-engine worker`` and ``start_worker_process`` (for ``model-engine serve``).

A worker runs tasks in a pool of threads (they wait on HTTP, which one I/O loop does for all of them), consumes the
queue of every endpoint in the registry (a new endpoint's queue within ``QUEUE_DISCOVERY_SECONDS``), and gives
each endpoint at most its share of the threads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import IO, Any

from celery import Celery, bootsteps, signals
from celery.backends.database import DatabaseBackend
from celery.worker import state as worker_state
from pydantic import SecretStr

from model_engine_server.config import Settings
from model_engine_server.domain.ports import UpstreamResolver
from model_engine_server.tasks.celery_app import create_celery_app
from model_engine_server.tasks.completion_task import register_completion_task
from model_engine_server.tasks.policy import (
    EXPIRED_TASK_CLEANUP_SECONDS,
    IDLE_QUEUE,
    QUEUE_DISCOVERY_SECONDS,
    TASK_NAME,
)
from model_engine_server.tasks.runtime import WorkerRuntime

log = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 1.0

_runtime: WorkerRuntime | None = None  # one per worker process, set by run_worker before Celery starts


def _current_runtime() -> WorkerRuntime:
    assert _runtime is not None, "run_worker sets the runtime before the consumer starts"
    return _runtime


class QueueDiscovery(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consume the queue of every endpoint in the registry; stop consuming the queues of removed ones."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._entry: Any = None
        self._next_cleanup = 0.0

    def start(self, c: Any) -> None:
        runtime = _current_runtime()
        runtime.gate.on_pause = lambda queue: c.call_soon(partial(self._pause, c, queue))
        runtime.gate.on_resume = lambda queue: c.call_soon(partial(self._resume, c, queue))
        self._apply(c, runtime.run(runtime.wanted_queues()))
        self._entry = c.timer.call_repeatedly(QUEUE_DISCOVERY_SECONDS, self._tick, (c,))

    def stop(self, c: Any) -> None:
        if self._entry is not None:
            c.timer.cancel(self._entry)
            self._entry = None

    def _tick(self, c: Any) -> None:
        runtime = _current_runtime()
        try:
            wanted = runtime.run(runtime.wanted_queues())
            self._maybe_clean_up(c.app, runtime)
        except Exception:  # the registry is briefly unreachable: keep the queues we have
            log.warning("Could not refresh the endpoint queues; retrying", exc_info=True)
            return
        c.call_soon(partial(self._apply, c, wanted))  # queue changes happen on the consumer's own thread

    @staticmethod
    def _consuming(c: Any) -> set[str]:
        return {queue.name for queue in c.task_consumer.queues}

    def _apply(self, c: Any, wanted: set[str]) -> None:
        wanted = wanted - _current_runtime().gate.paused_queues()  # read now: a pause may have happened since
        consuming = self._consuming(c)
        for queue in sorted(wanted - consuming):
            c.add_task_queue(queue)
            log.info("Consuming endpoint queue %s", queue)
        for queue in sorted(consuming - wanted - {IDLE_QUEUE}):
            c.cancel_task_queue(queue)
            log.info("Stopped consuming endpoint queue %s", queue)

    def _pause(self, c: Any, queue: str) -> None:
        if queue in self._consuming(c) and queue in _current_runtime().gate.paused_queues():
            c.cancel_task_queue(queue)
            log.debug("Paused endpoint queue %s: its tasks have all their slots", queue)

    def _resume(self, c: Any, queue: str) -> None:
        # The next discovery tick drops it again if the endpoint was removed in the meantime.
        if queue not in self._consuming(c) and queue not in _current_runtime().gate.paused_queues():
            c.add_task_queue(queue)

    def _maybe_clean_up(self, app: Celery, runtime: WorkerRuntime) -> None:
        """Forget expired task records; the database result backend has no expiry of its own (Redis keys do)."""
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        self._next_cleanup = now + EXPIRED_TASK_CLEANUP_SECONDS
        removed = runtime.run(runtime.store.delete_expired())
        if isinstance(app.backend, DatabaseBackend):
            app.backend.cleanup()
        if removed:
            log.info("Removed %d expired async task record(s)", removed)


class LeaseRecovery(bootsteps.StartStopStep):  # type: ignore[misc]
    """After the consumer reconnects to a Redis broker, hand back at once the messages a lost connection dropped.

    Celery forgets the requests it had reserved but not started when its broker connection breaks; their messages
    stay in the broker's unacknowledged set and would wait out the visibility timeout. This step runs before the new
    connection delivers anything, so every held task Celery no longer knows was dropped."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        leases = _current_runtime().leases
        if leases is None:
            return
        dropped = leases.forget_all_but(worker_state.requests)
        for tag in dropped:
            c.task_consumer.channel.qos.restore_by_tag(tag)
        if dropped:
            log.warning("Requeued %d task(s) a lost broker connection had left undelivered", len(dropped))


def _on_task_received(request: Any, **_: Any) -> None:
    runtime = _runtime
    if runtime is not None and runtime.leases is not None and request.name == TASK_NAME:
        runtime.leases.hold(request.id, request.message.delivery_tag)


def _on_task_done(task_id: str | None = None, request: Any = None, **_: Any) -> None:
    runtime = _runtime
    if runtime is not None and runtime.leases is not None:
        runtime.leases.release(str(task_id or getattr(request, "id", "")))


def run_worker(
    settings: Settings,
    resolver: UpstreamResolver,
    *,
    concurrency: int | None = None,
    endpoint_names: frozenset[str] | None = None,
    exit_with_parent: bool = False,
) -> None:
    """Run a worker in this process until it is stopped (SIGTERM or Ctrl-C: warm shutdown, running tasks finish).
    ``resolver`` finds an endpoint's replicas (the CLI builds it: the orchestrator runs in another process).
    ``exit_with_parent``: stop the same way once the process that started this one is gone."""
    global _runtime
    if exit_with_parent:
        _stop_when_orphaned(os.getppid())
    # One line per request and per task is too much at hundreds of tasks a second; failures still log (ERROR).
    for noisy in ("httpx", "celery.app.trace", "celery.worker.strategy", "celery.worker.consumer.consumer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    app = create_celery_app(settings, worker=True)
    threads = concurrency or settings.async_worker_concurrency
    _runtime = WorkerRuntime(settings, resolver, endpoint_names=endpoint_names, concurrency=threads)
    register_completion_task(app, _runtime)
    app.steps["consumer"].add(QueueDiscovery)
    app.steps["consumer"].add(LeaseRecovery)
    signals.task_received.connect(_on_task_received, weak=False)
    signals.task_postrun.connect(_on_task_done, weak=False)
    signals.task_revoked.connect(_on_task_done, weak=False)
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={threads}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--queues={IDLE_QUEUE}",
        f"--hostname=llm-engine-{os.getpid()}@{socket.gethostname()}",
    ]
    try:
        app.worker_main(argv)
    finally:
        _runtime.close()
        _runtime = None


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this process (Celery's warm shutdown) once ``parent`` has exited: the kernel gives an orphan a new
    parent, so a changed parent pid is the sign."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        log.warning("The process that started this worker (pid %d) is gone; shutting down", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as ``LLM_ENGINE_*`` variables, so a child process loads exactly these settings."""
    environment: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        key = f"LLM_ENGINE_{name.upper()}"
        if isinstance(value, SecretStr):
            environment[key] = value.get_secret_value()
        elif name == "kubernetes_gpu_tolerations":
            environment[key] = ",".join(value)
        elif isinstance(value, dict | list):
            environment[key] = json.dumps(settings.model_dump(mode="json")[name])
        elif isinstance(value, bool):
            environment[key] = "true" if value else "false"
        else:
            environment[key] = str(value)
    return environment


def start_worker_process(
    settings: Settings,
    *,
    concurrency: int | None = None,
    endpoint_names: list[str] | None = None,
    log_file: Path | IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a worker as a child process with ``settings``; stop it with ``terminate()`` (warm shutdown) then
    ``wait()``. Output goes to ``log_file`` (a path is appended to), else to this process's stderr."""
    # The CLI's `worker` command is the entry point: it also picks the replica resolver for the orchestrator kind.
    command = [sys.executable, "-c", "from model_engine_server.cli import app; app()", "worker", "--exit-with-parent"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if endpoint_names:
        command += ["--queues", ",".join(endpoint_names)]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("LLM_ENGINE_")}
    environment.update(settings_environment(settings))
    if isinstance(log_file, Path):
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as output:
            return subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    return subprocess.Popen(command, env=environment, stdout=log_file, stderr=subprocess.STDOUT if log_file else None)


def parse_endpoint_names(raw: str | None) -> frozenset[str] | None:
    if not raw:
        return None
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    return names or None
