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


@pytest.mark.parametrize(
    ("held", "settled", "renewed"),
    [
        # Two tasks; one finishes, as if its ack had been lost to an outage.
        ([("task-running", "tag-running"), ("task-finished", "tag-finished")], "tag-finished", "tag-running"),
        # A task that comes back later (a waking endpoint, a retry) sends its next message under the same task id,
        # and the worker may receive it before the run that sent it has ended: that run settles its own message.
        ([("task", "tag-first-run"), ("task", "tag-next-run")], "tag-first-run", "tag-next-run"),
    ],
    ids=["two-tasks", "retried-task"],
)
def test_a_running_task_keeps_its_message_and_a_finished_run_is_settled(
    leases: RedisLeases, client: redis.Redis, prefix: str, held: list[tuple[str, str]], settled: str, renewed: str
) -> None:
    _deliver(client, prefix, *(tag for _, tag in held))
    for task_id, tag in held:
        leases.hold(task_id, tag)
    leases.release(next(task_id for task_id, tag in held if tag == settled))

    eventually(lambda: client.zscore(prefix + "unacked_index", settled) is None, what=f"{settled} settled")
    assert client.hexists(prefix + "unacked", settled) is False
    score = client.zscore(prefix + "unacked_index", renewed)
    assert score is not None and score > LONG_AGO  # renewed: a crash now would deliver it again
    assert client.hexists(prefix + "unacked", renewed)


def test_held_tasks_celery_no_longer_knows_are_handed_back(leases: RedisLeases) -> None:
    leases.hold("task-running", "tag-running")
    leases.hold("task-dropped", "tag-dropped")

    assert leases.forget_all_but({"task-running"}) == ["tag-dropped"]
    assert leases.forget_all_but({"task-running"}) == []
