"""Async completion tasks through the real gateway app and a real Celery worker (embedded SQLite broker)."""

from __future__ import annotations

import subprocess
import uuid

import pytest
from llmengine import AsyncCompletionTask, Completion, CompletionTask, TaskStatus, api_engine
from llmengine.errors import NotFoundError
from sdk_inprocess_gateway import BackgroundGateway

from model_engine_server.testing.tgi import instant_text

# Generous: the first task also waits for the worker process to start and discover the endpoint's queue.
RESULT_TIMEOUT = 90


def test_a_submitted_completion_is_collected_with_result(
    completions: BackgroundGateway, async_worker: subprocess.Popen[bytes]
) -> None:
    name = completions.new_endpoint()
    task = Completion.submit(model=name, prompt="Hello there world", max_new_tokens=4, temperature=0)
    assert isinstance(task, CompletionTask)
    assert task.status() in {TaskStatus.PENDING, TaskStatus.STARTED, TaskStatus.SUCCESS}
    result = task.result(timeout=RESULT_TIMEOUT)
    assert result.output.text == instant_text(4)
    assert result.output.num_completion_tokens == 4
    assert result.output.num_prompt_tokens == 3
    assert task.status() is TaskStatus.SUCCESS
    # A handle made from the id alone reads the same task.
    assert CompletionTask(task.task_id).result(timeout=RESULT_TIMEOUT) == result


async def test_asubmit_and_await_the_result(
    completions: BackgroundGateway, async_worker: subprocess.Popen[bytes]
) -> None:
    name = completions.new_endpoint()
    tasks = [await Completion.asubmit(model_name=name, prompt="Hi", max_new_tokens=n) for n in (1, 2, 3)]
    assert all(isinstance(t, AsyncCompletionTask) for t in tasks)
    texts = [(await t.result(timeout=RESULT_TIMEOUT)).output.text for t in tasks]
    assert texts == [instant_text(1), instant_text(2), instant_text(3)]


def test_only_the_submitter_can_read_a_task(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    task = Completion.submit(model=name, prompt="Hi", max_new_tokens=2)
    api_engine.set_api_key(f"someone-else-{uuid.uuid4().hex[:8]}")
    with pytest.raises(NotFoundError):
        CompletionTask(task.task_id).status()


def test_an_unknown_task_is_not_found(completions: BackgroundGateway) -> None:
    with pytest.raises(NotFoundError):
        CompletionTask("no-such-task").status()


def test_submitting_to_an_unknown_endpoint_is_not_found(completions: BackgroundGateway) -> None:
    with pytest.raises(NotFoundError, match="no-such-llm"):
        Completion.submit(model="no-such-llm", prompt="Hi")
