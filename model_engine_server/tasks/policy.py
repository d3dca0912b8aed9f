"""Named policy of the async path: queue names, retry backoff and lease timing, in one place."""

from __future__ import annotations

import math
import random

from model_engine_server.domain.backoff import full_jitter

TASK_NAME = "llm_engine.complete"
QUEUE_PREFIX = "llm-engine.endpoint."
# Every worker consumes this queue, so it has one before any endpoint exists; nothing is published to it.
IDLE_QUEUE = "llm-engine.idle"

RETRY_BASE_SECONDS = 1.0  # first retry of an upstream 429/503/connection error waits up to this long
RETRY_CAP_SECONDS = 60.0
WAKE_RECHECK_SECONDS = 1.0  # a task that woke its endpoint comes back this often until a replica is ready

PUBLISH_RETRIES = 2  # a broker that refuses this many reconnects in a row is unavailable: 503 at submit
# A worker that finished a task waits this long for a lost result store (Redis) to come back rather than lose the
# result: the caller of a submit wants a quick 503, the task's owner wants its answer.
WORKER_RESULT_STORE_WAIT_SECONDS = 120.0
# While some endpoint is high_priority, this share of a worker's threads (at least one, when it has two) is kept for
# high-priority endpoints' tasks: other endpoints' backlog cannot delay them.
HIGH_PRIORITY_THREAD_SHARE = 0.25
QUEUE_DISCOVERY_SECONDS = 2.0  # how soon a worker starts consuming a new endpoint's queue
EXPIRED_TASK_CLEANUP_SECONDS = 600.0


def queue_for(endpoint_id: str) -> str:
    """The queue of one endpoint's tasks, named by id: a new endpoint reusing a name does not inherit tasks."""
    return QUEUE_PREFIX + endpoint_id


def ordinary_thread_limit(threads: int) -> int:
    """How many of a worker's ``threads`` the endpoints that are not high-priority may hold together."""
    if threads < 2:
        return threads
    return threads - max(1, math.floor(threads * HIGH_PRIORITY_THREAD_SHARE))


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """How long the ``attempt``-th retry of a task waits (full-jitter exponential backoff)."""
    return full_jitter(attempt, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS, rng)


def lease_renew_interval(visibility_timeout: float) -> float:
    """Renew three times per timeout, so one late renewal never lets a running task's message be redelivered."""
    return visibility_timeout / 3
