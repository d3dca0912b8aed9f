"""What one worker process shares between its task threads: an event loop, the pooled upstream client, the registry,
replica resolution, per-endpoint slot counting and the leases of the messages it holds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Container, Coroutine
from typing import Any, TypeVar

import httpx
import redis

from model_engine_server.config import Settings
from model_engine_server.db.registry import Registry
from model_engine_server.domain.admission import Admission, Admitted
from model_engine_server.domain.completions import CompletionOutput, CompletionRequest
from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.domain.exceptions import (
    DomainError,
    EndpointNotReadyError,
    EndpointWakeTimeoutError,
    OverloadedError,
    UpstreamError,
)
from model_engine_server.domain.ports import UpstreamResolver
from model_engine_server.domain.waking import Waker
from model_engine_server.inference.adapters import adapter_for
from model_engine_server.inference.upstream import UpstreamClient
from model_engine_server.tasks.celery_app import uses_redis
from model_engine_server.tasks.policy import lease_renew_interval, ordinary_thread_limit, queue_for
from model_engine_server.tenancy.counters import RedisCounters, limit_key_prefix
from model_engine_server.tenancy.limiter import TenantLimiter
from model_engine_server.tenancy.usage import UsageRecorder

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_retryable(error: DomainError) -> bool:
    """Upstream 429, 503 (or no ready replica) and connection failures are worth another try; nothing else is —
    in particular not an endpoint that did not wake within the cold-start bound (the task waited that long already)."""
    if isinstance(error, EndpointWakeTimeoutError):
        return False
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
    frees up, so its backlog stays in the broker instead of cycling through the worker as retries.

    While some endpoint is ``high_priority``, the others together hold at most ``ordinary_limit`` slots: the rest of
    the threads are kept for high-priority endpoints, whose tasks therefore never wait behind other endpoints' async
    backlog. A queue paused because that shared pool is full resumes as soon as one of its slots frees up."""

    def __init__(self) -> None:
        self.slots = EndpointSlots()
        self.ordinary_limit: int | None = None  # None: no high-priority endpoint, nothing kept back
        self._ordinary = 0  # slots held by endpoints that are not high-priority
        self._paused: set[str] = set()  # endpoint ids
        self._paused_for_pool: set[str] = set()
        self._lock = threading.Lock()
        # Set by the consumer step; they hand the change to the consumer's own thread.
        self.on_pause: Callable[[str], None] | None = None
        self.on_resume: Callable[[str], None] | None = None

    def paused_queues(self) -> set[str]:
        with self._lock:
            return {queue_for(endpoint_id) for endpoint_id in self._paused}

    def try_enter(self, endpoint_id: str, limit: int, *, high_priority: bool = False) -> bool:
        with self._lock:
            pool_full = not high_priority and self.ordinary_limit is not None and self._ordinary >= self.ordinary_limit
            if not pool_full and self.slots.try_enter(endpoint_id, limit):
                self._ordinary += not high_priority
                return True
            newly_paused = endpoint_id not in self._paused
            self._paused.add(endpoint_id)
            if pool_full:
                self._paused_for_pool.add(endpoint_id)
        if newly_paused and self.on_pause is not None:
            self.on_pause(queue_for(endpoint_id))
        return False

    def leave(self, endpoint_id: str, *, high_priority: bool = False) -> None:
        self.slots.leave(endpoint_id)
        with self._lock:
            resumed = {endpoint_id} & self._paused
            if not high_priority:
                self._ordinary -= 1
                resumed |= self._paused_for_pool
                self._paused_for_pool.clear()
            self._paused -= resumed
        if self.on_resume is not None:
            for resumed_id in sorted(resumed):
                self.on_resume(queue_for(resumed_id))


class RedisLeases:
    """Keeps the Redis broker from handing the messages this process holds to another worker, and settles the
    messages of finished tasks whose acknowledgement a broker outage lost.

    kombu's Redis transport redelivers a message whose entry in the ``unacked_index`` sorted set is older than the
    visibility timeout. This thread moves the entries of held messages to "now" every third of the timeout, so
    only the messages of a worker that died age past it, whatever the length of the generation. A task that
    finishes while Redis is away cannot be acknowledged (Celery logs "Couldn't ack" and moves on): its entries
    would age past the timeout and run it a second time, so the next tick removes them — what an ack does.
    """

    def __init__(self, settings: Settings) -> None:
        self._client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=3, socket_timeout=10)
        self._index_key = settings.broker_key_prefix + "unacked_index"
        self._messages_key = settings.broker_key_prefix + "unacked"
        self._interval = lease_renew_interval(settings.async_task_visibility_timeout_seconds)
        # task id -> delivery tags, oldest first: a retried task's next message (same id) may arrive before the run
        # that sent it ends, and that run's end must settle its own message, not the next one.
        self._held: dict[str, list[str]] = {}
        self._finished: list[str] = []  # delivery tags of finished tasks, acknowledged or not
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-leases", daemon=True)
        self._thread.start()

    def hold(self, task_id: str, delivery_tag: str) -> None:
        with self._lock:
            self._held.setdefault(task_id, []).append(delivery_tag)

    def release(self, task_id: str) -> None:
        with self._lock:
            tags = self._held.get(task_id)
            if tags:
                self._finished.append(tags.pop(0))
                if not tags:
                    del self._held[task_id]

    def forget_all_but(self, task_ids: Container[str]) -> list[str]:
        """Stop renewing every held message whose task is not in ``task_ids``; returns their delivery tags.

        After a broker connection loss Celery drops the requests it had reserved but not started (their delivery
        tags belong to the lost channel) without any signal: renewing their leases would keep them from ever being
        delivered again."""
        with self._lock:
            dropped = [task_id for task_id in self._held if task_id not in task_ids]
            return [tag for task_id in dropped for tag in self._held.pop(task_id)]

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            with self._lock:
                held, finished = [tag for tags in self._held.values() for tag in tags], self._finished
                self._finished = []
            try:
                self._renew_and_settle(held, finished)
            except redis.RedisError:
                log.warning("Could not renew the broker leases of %d task(s); retrying", len(held), exc_info=True)
                with self._lock:
                    self._finished.extend(finished)

    def _renew_and_settle(self, held: list[str], finished: list[str]) -> None:
        with self._client.pipeline() as pipe:
            if held:  # XX: only renew entries that still exist (an acknowledged message must not come back)
                pipe.zadd(self._index_key, dict.fromkeys(held, time.time()), xx=True)
            if finished:  # delivery tags are unique: removing an already acknowledged one changes nothing
                pipe.zrem(self._index_key, *finished)
                pipe.hdel(self._messages_key, *finished)
            pipe.execute()

    def close(self) -> None:
        self._stopped.set()
        self._client.close()


class WorkerRuntime:
    def __init__(
        self,
        settings: Settings,
        resolver: UpstreamResolver,
        *,
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
        self._resolver = resolver
        self.run(self._open())

    async def _open(self) -> None:
        # Created on the I/O loop: their connections belong to it.
        self._registry = Registry(self.settings.database_url)
        self.store = self._registry.tasks
        # The rules every way in applies, by the endpoint id each task names (the task's own endpoint, not a newer
        # one that reuses its name).
        # A task for an endpoint at zero wakes it like a request at the gateway, then comes back until it has a replica.
        settings = self.settings
        waker = Waker.of(
            self._registry.endpoints, self._resolver, settings.scaling_policy(), settings.cold_start_timeout_seconds
        )
        self.admission = Admission(self._registry.endpoints, self._resolver, settings.model_zoo(), waker=waker)
        self.upstream = UpstreamClient.from_settings(self.settings)
        self.usage = UsageRecorder(self._registry.usage, self.settings.usage_flush_seconds)
        await self.usage.start()
        # Async tasks' generated tokens count against their owner's budget too, where the gateways keep it: in Redis
        # (process-memory counters here would be invisible to the gateways).
        redis_url = self.settings.rate_limit_redis_url
        self._counters = RedisCounters(redis_url, prefix=limit_key_prefix(self.settings)) if redis_url else None
        self.limiter = (
            TenantLimiter(self.settings.tenant_limits(), self._registry.tenant_limits.get, self._counters)
            if self._counters is not None
            else None
        )

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the I/O loop and wait for it (called from task threads and the consumer)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def slot_limit(self, endpoint: ModelEndpoint) -> int:
        """This process's share for one endpoint: the setting, capped by what the endpoint's servers take at once,
        and always leaving a slot for other endpoints when there are several slots (for other ordinary endpoints
        within the threads that are not kept for high-priority ones)."""
        capacity = endpoint.config.max_workers * endpoint.config.per_worker
        threads = self.concurrency
        if not endpoint.config.high_priority and self.gate.ordinary_limit is not None:
            threads = self.gate.ordinary_limit
        return max(1, min(self.settings.async_endpoint_concurrency, capacity, threads - 1))

    async def complete(self, admitted: Admitted, request: CompletionRequest) -> CompletionOutput:
        adapter = adapter_for(admitted.endpoint.config.inference_framework)
        return await self.upstream.complete(admitted.upstreams, adapter, request)

    async def account(self, task_id: str, endpoint_name: str, output: CompletionOutput) -> None:
        """Count a finished task's tokens in its owner's usage (written with the gateway's, per endpoint and day)."""
        owner = await self.store.owner_of(task_id)
        if owner is not None:
            self.usage.record(owner, endpoint_name, output.num_prompt_tokens or 0, output.num_completion_tokens)
            if self.limiter is not None:
                await self.limiter.charge_tokens(owner, output.num_completion_tokens)

    async def wanted_queues(self) -> set[str]:
        """The queues to consume; also keeps threads back for high-priority endpoints while there are any."""
        names = self.endpoint_names
        endpoints = [e for e in await self._registry.endpoints.list_all() if names is None or e.name in names]
        any_high_priority = any(e.config.high_priority for e in endpoints)
        self.gate.ordinary_limit = ordinary_thread_limit(self.concurrency) if any_high_priority else None
        return {queue_for(e.id) for e in endpoints}

    async def _close(self) -> None:
        await self.usage.close()
        if self._counters is not None:
            await self._counters.aclose()
        await self.upstream.aclose()
        await self._registry.close()

    def close(self) -> None:
        if self.leases is not None:
            self.leases.close()
        with contextlib.suppress(Exception):  # shutting down: nothing left to save
            self.run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
