"""The leases a worker keeps on the Redis broker's unacknowledged messages (kombu's ``unacked`` hash and its
``unacked_index`` sorted set, whose scores say when a message goes back to its queue).

What a user would see without them: a task delivered twice (a finished task whose ack a Redis outage lost), or
never (a message Celery dropped on a lost connection while its lease was still renewed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from model_engine_server.config import Settings
from model_engine_server.tasks.runtime import RedisLeases
from model_engine_server.testing import eventually
from tests.tasks.conftest import REDIS_URL, delete_redis_prefix

LONG_AGO = 1.0  # a score far in the past: the broker would redeliver this message at its next sweep


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"llme-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_redis_prefix(prefix)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL)
    yield connection
    connection.close()


@pytest.fixture
def leases(prefix: str, tmp_path: Path) -> Iterator[RedisLeases]:
    # The shortest visibility timeout: the lease thread ticks every second.
    settings = Settings(
        data_dir=tmp_path, broker_url=REDIS_URL, broker_key_prefix=prefix, async_task_visibility_timeout_seconds=3
    )
    held = RedisLeases(settings)
    yield held
    held.close()


def _deliver(client: redis.Redis, prefix: str, *tags: str) -> None:
    """What kombu does when it hands a message to a worker."""
    client.zadd(prefix + "unacked_index", dict.fromkeys(tags, LONG_AGO))
    client.hset(prefix + "unacked", mapping=dict.fromkeys(tags, '[{}, "", ""]'))


def test_a_running_task_keeps_its_message_and_a_finished_one_is_settled(
    leases: RedisLeases, client: redis.Redis, prefix: str
) -> None:
    _deliver(client, prefix, "tag-running", "tag-finished")
    leases.hold("task-running", "tag-running")
    leases.hold("task-finished", "tag-finished")
    leases.release("task-finished")  # as if its ack had been lost to an outage

    eventually(lambda: client.zscore(prefix + "unacked_index", "tag-finished") is None, what="finished settled")
    assert client.hexists(prefix + "unacked", "tag-finished") is False
    score = client.zscore(prefix + "unacked_index", "tag-running")
    assert score is not None and score > LONG_AGO
    assert client.hexists(prefix + "unacked", "tag-running")


def test_a_retried_task_keeps_the_lease_of_its_next_message_when_the_first_run_ends_after_it_arrived(
    leases: RedisLeases, client: redis.Redis, prefix: str
) -> None:
    # A task that comes back later (a waking endpoint, a retry) sends its next message under the same task id; the
    # worker may receive it before the run that sent it has ended.
    _deliver(client, prefix, "tag-first-run", "tag-next-run")
    leases.hold("task", "tag-first-run")
    leases.hold("task", "tag-next-run")
    leases.release("task")  # the first run ends

    eventually(lambda: client.zscore(prefix + "unacked_index", "tag-first-run") is None, what="first run settled")
    score = client.zscore(prefix + "unacked_index", "tag-next-run")
    assert score is not None and score > LONG_AGO  # renewed, not settled: a crash now would deliver it again
    assert client.hexists(prefix + "unacked", "tag-next-run")


def test_held_tasks_celery_no_longer_knows_are_handed_back(leases: RedisLeases) -> None:
    leases.hold("task-running", "tag-running")
    leases.hold("task-dropped", "tag-dropped")

    assert leases.forget_all_but({"task-running"}) == ["tag-dropped"]
    assert leases.forget_all_but({"task-running"}) == []
