"""What one worker process shares between its task threads: an event loop, the pooled upstream client, the registry,
replica resolution, per-endpoint slot counting and the leases of the messages it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import redis

from model_engine_server.config import Settings
from model_engine_server.db.repositories import AsyncTaskStore, EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.admission import Admission, Admitted
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.domain.exceptions import (
    DomainError,
    EndpointNotReadyError,
    OverloadedError,
    UpstreamError,
)
from model_engine_server.domain.ports import Orchestrator, UpstreamResolver
from model_engine_server.inference.adapters import adapter_for
from model_engine_server.inference.upstream import UpstreamClient
from model_engine_server.orchestration.local.directory import LocalReplicaDirectory
from model_engine_server.tasks.celery_app import uses_redis
from model_engine_server.tasks.policy import lease_renew_interval, queue_for

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalResolver:
    """One machine: the local orchestrator runs in another process; read its state file."""

    def __init__(self, settings: Settings) -> None:
        self._directory = LocalReplicaDirectory(settings.data_dir)

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        return self._directory.upstreams(endpoint.id)


class OrchestratorResolver:
    """Kubernetes: the endpoint's Service URL, computed without API calls (the CLI builds the orchestrator: only it
    may import the Kubernetes orchestrator)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        return await self._orchestrator.upstreams(endpoint)


def is_retryable(error: DomainError) -> bool:
    """Upstream 429, 503 (or no ready replica) and connection failures are worth another try; nothing else is."""
    if isinstance(error, OverloadedError | EndpointNotReadyError):
        return True
    cause = error.__cause__
    if isinstance(error, UpstreamError) and isinstance(cause, httpx.TransportError):
        # Connection-level failures; a read timeout means the model worked for the whole timeout: do not repeat it.
        return not isinstance(cause, httpx.ReadTimeout)
    return False


class EndpointSlots:
    """How many tasks of each endpoint this process runs right now (task threads enter and leave)."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def try_enter(self, endpoint_id: str, limit: int) -> bool:
        with self._lock:
            running = self._running.get(endpoint_id, 0)
            if running >= limit:
                return False
            self._running[endpoint_id] = running + 1
            return True

    def leave(self, endpoint_id: str) -> None:
        with self._lock:
            self._running[endpoint_id] -= 1
            if not self._running[endpoint_id]:
                del self._running[endpoint_id]


class QueueGate:
    """Per-endpoint slots, plus flow control: an endpoint that has all its slots stops being consumed from until one
    frees up, so its backlog stays in the broker instead of cycling through the worker as retries."""

    def __init__(self) -> None:
        self.slots = EndpointSlots()
        self._paused: set[str] = set()  # endpoint ids
        self._lock = threading.Lock()
        # Set by the consumer step; they hand the change to the consumer's own thread.
        self.on_pause: Callable[[str], None] | None = None
        self.on_resume: Callable[[str], None] | None = None

    def paused_queues(self) -> set[str]:
        with self._lock:
            return {queue_for(endpoint_id) for endpoint_id in self._paused}

    def try_enter(self, endpoint_id: str, limit: int) -> bool:
        if self.slots.try_enter(endpoint_id, limit):
            return True
        with self._lock:
            newly_paused = endpoint_id not in self._paused
            self._paused.add(endpoint_id)
        if newly_paused and self.on_pause is not None:
            self.on_pause(queue_for(endpoint_id))
        return False

    def leave(self, endpoint_id: str) -> None:
        self.slots.leave(endpoint_id)
        with self._lock:
            was_paused = endpoint_id in self._paused
            self._paused.discard(endpoint_id)
        if was_paused and self.on_resume is not None:
            self.on_resume(queue_for(endpoint_id))


class RedisLeases:
    """Keeps the Redis broker from handing the messages this process holds to another worker.

    kombu's Redis transport redelivers a message whose entry in the ``unacked_index`` sorted set is older than the
    visibility timeout. This thread moves the entries of held messages to "now" every third of the timeout, so
    only the messages of a worker that died age past it, whatever the length of the generation.
    """

    def __init__(self, settings: Settings) -> None:
        self._client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=10)
        self._key = settings.broker_key_prefix + "unacked_index"
        self._interval = lease_renew_interval(settings.async_task_visibility_timeout_seconds)
        self._held: dict[str, str] = {}  # task id -> delivery tag
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-leases", daemon=True)
        self._thread.start()

    def hold(self, task_id: str, delivery_tag: str) -> None:
        with self._lock:
            self._held[task_id] = delivery_tag

    def release(self, task_id: str) -> None:
        with self._lock:
            self._held.pop(task_id, None)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            with self._lock:
                tags = list(self._held.values())
            if not tags:
                continue
            try:
                # XX: only renew entries that still exist (an acknowledged message must not come back).
                self._client.zadd(self._key, dict.fromkeys(tags, time.time()), xx=True)
            except redis.RedisError:
                log.warning("Could not renew the broker leases of %d task(s); retrying", len(tags), exc_info=True)

    def close(self) -> None:
        self._stopped.set()
        self._client.close()


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        *,
        resolver: UpstreamResolver | None = None,
        endpoint_names: frozenset[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.settings = settings
        self.concurrency = concurrency or settings.async_worker_concurrency
        self.endpoint_names = endpoint_names
        self.gate = QueueGate()
        self.leases = RedisLeases(settings) if uses_redis(settings.broker_url) else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="worker-io", daemon=True)
        self._thread.start()
        self._resolver = resolver or LocalResolver(settings)
        self.run(self._open())

    async def _open(self) -> None:
        # Created on the I/O loop: their connections belong to it.
        self._database = create_engine(self.settings.database_url)
        sessions = create_session_factory(self._database)
        self.registry = EndpointRegistry(sessions)
        self.store = AsyncTaskStore(sessions)
        # The rules every way in applies, by the endpoint id each task names (the task's own endpoint, not a newer
        # one that reuses its name).
        self.admission = Admission(self.registry, self._resolver, self.settings.model_zoo())
        self.upstream = UpstreamClient.from_settings(self.settings)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the I/O loop and wait for it (called from task threads and the consumer)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def slot_limit(self, endpoint: ModelEndpoint) -> int:
        """This process's share for one endpoint: the setting, capped by what the endpoint's servers take at once,
        and always leaving a slot for other endpoints when there are several slots."""
        capacity = endpoint.config.max_workers * endpoint.config.per_worker
        return max(1, min(self.settings.async_endpoint_concurrency, capacity, self.concurrency - 1))

    async def complete(self, admitted: Admitted, request: CompletionRequest) -> CompletionOutput:
        adapter = adapter_for(admitted.endpoint.config.inference_framework)
        return await self.upstream.complete(admitted.upstreams, adapter, request)

    async def wanted_queues(self) -> set[str]:
        endpoints = await self.registry.list_all()
        return {queue_for(e.id) for e in endpoints if self.endpoint_names is None or e.name in self.endpoint_names}

    async def _close(self) -> None:
        await self.upstream.aclose()
        await self._database.dispose()

    def close(self) -> None:
        if self.leases is not None:
            self.leases.close()
        with contextlib.suppress(Exception):  # shutting down: nothing left to save
            self.run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
