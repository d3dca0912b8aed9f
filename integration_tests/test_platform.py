"""The main job, end to end: create an endpoint with the SDK, get completions (sync, stream, async), survive a crashed
inference server, delete the endpoint. Runs against a real platform (see conftest.py)."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from llmengine import ChatCompletion, ChatCompletionResponse, Completion, Model
from llmengine.data_types import (
    CompletionStreamV1Response,
    CompletionSyncV1Response,
    ModelEndpointStatus,
)
from llmengine.errors import BadRequestError, NotFoundError

from integration_tests.support import MODEL, PROMPT, Platform, greedy, wait_for_status
from model_engine_server.orchestration.local.processes import process_alive
from model_engine_server.testing import eventually

pytestmark = pytest.mark.timeout(600)


def test_the_demo_endpoint_is_created_public_and_ready(sdk: Platform) -> None:
    if sdk.process is None:
        pytest.skip("only a platform these tests started is known to have the demo endpoint")
    # Any key may call it: it belongs to the platform's owner and is public.
    ready = httpx.get(f"{sdk.base_url}/healthz", timeout=5)
    assert ready.status_code == 200

    def complete() -> httpx.Response:
        return httpx.post(
            f"{sdk.base_url}/v1/llm/completions-sync",
            params={"model_endpoint_name": MODEL},
            json={"prompt": PROMPT, "max_new_tokens": 5, "temperature": 0},
            auth=("someone-else", ""),
            timeout=120,
        )

    # 503 while the demo endpoint's server is still starting.
    answer = eventually(complete, lambda a: a.status_code != 503, timeout=240, interval=1, what="the demo endpoint")
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"]["num_completion_tokens"] > 0


def test_endpoint_is_listed_with_its_observed_state(endpoint: str) -> None:
    got = Model.get(endpoint)
    assert got.status is ModelEndpointStatus.READY
    assert got.spec is not None
    assert got.spec.deployment_state is not None
    assert got.spec.deployment_state.available_workers == 1
    assert got.spec.deployment_state.unavailable_workers == 0
    assert endpoint in [e.name for e in Model.list().model_endpoints]


def test_sync_completion_is_greedy_and_counts_tokens(endpoint: str) -> None:
    first = greedy(endpoint)
    second = greedy(endpoint)
    assert first.output.text.strip()
    assert first.output.text == second.output.text  # temperature 0 is greedy: deterministic
    assert 0 < first.output.num_completion_tokens <= 12
    assert first.output.num_prompt_tokens is not None and first.output.num_prompt_tokens > 0
    assert first.request_id != second.request_id


def test_stream_delivers_the_same_text_token_by_token(endpoint: str) -> None:
    expected = greedy(endpoint)
    events: list[CompletionStreamV1Response] = []
    stream = Completion.create(model=endpoint, prompt=PROMPT, max_new_tokens=12, temperature=0, stream=True)
    with stream:
        events.extend(stream)
    assert all(e.error is None and e.output is not None for e in events)
    assert len(events) >= 2  # streamed, not one buffered blob
    assert [e.output.finished for e in events if e.output] == [False] * (len(events) - 1) + [True]
    assert "".join(e.output.text for e in events if e.output) == expected.output.text
    last = events[-1].output
    assert last is not None
    assert last.num_completion_tokens == expected.output.num_completion_tokens


async def test_acreate_sync_and_stream(endpoint: str) -> None:
    expected = greedy(endpoint)
    response = await Completion.acreate(model=endpoint, prompt=PROMPT, max_new_tokens=12, temperature=0, timeout=120)
    assert isinstance(response, CompletionSyncV1Response)
    assert response.output.text == expected.output.text

    stream = await Completion.acreate(model=endpoint, prompt=PROMPT, max_new_tokens=12, temperature=0, stream=True)
    texts = []
    async with stream:
        async for event in stream:
            assert event.error is None and event.output is not None
            texts.append(event.output.text)
    assert "".join(texts) == expected.output.text


def test_stop_sequences_end_the_completion(endpoint: str) -> None:
    full = greedy(endpoint, max_new_tokens=20).output.text
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    cut = full.index(stop)
    stopped = greedy(endpoint, max_new_tokens=20, stop_sequences=[stop]).output
    assert stopped.text in (full[:cut], full[: cut + len(stop)])  # with or without the stop text, never beyond
    assert stopped.num_completion_tokens < 20


def test_chat_through_the_openai_compatible_route_streams_the_same_answer(endpoint: str) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = ChatCompletion.create(model=endpoint, messages=messages, max_tokens=20, temperature=0, timeout=120)
    assert isinstance(reply, ChatCompletionResponse)
    assert reply.model == endpoint and reply.output.text
    stream = ChatCompletion.create(
        model=endpoint, messages=messages, max_tokens=20, temperature=0, timeout=120, stream=True
    )
    chunks = list(stream)
    assert "".join(chunk.text for chunk in chunks) == reply.output.text
    assert chunks[-1].usage == reply.usage


def test_bad_requests_are_4xx_with_a_message(endpoint: str, sdk: Platform) -> None:
    with pytest.raises(NotFoundError):
        Completion.create(model="no-such-endpoint", prompt=PROMPT, max_new_tokens=5)
    url = f"{sdk.base_url}/v1/llm/completions-sync"
    auth = (sdk.api_key, "")
    for body in (
        {"prompt": PROMPT, "max_new_tokens": 5, "temperature": 1.5},
        {"prompt": PROMPT, "max_new_tokens": 0},
        {"prompt": "", "max_new_tokens": 5},
        {"prompt": PROMPT, "max_new_tokens": 10_000_000},
    ):
        answer = httpx.post(url, params={"model_endpoint_name": endpoint}, json=body, auth=auth, timeout=30)
        assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
        assert answer.json()["detail"], body
    with pytest.raises(BadRequestError):
        Completion.create(model=endpoint, prompt=PROMPT, max_new_tokens=10_000_000)
    # Errors before a stream starts are ordinary HTTP errors too.
    stream = httpx.post(
        f"{sdk.base_url}/v1/llm/completions-stream",
        params={"model_endpoint_name": "no-such-endpoint"},
        json={"prompt": PROMPT, "max_new_tokens": 5, "temperature": 0},
        auth=auth,
        timeout=30,
    )
    assert stream.status_code == 404, stream.text


def test_a_killed_inference_server_is_restarted_and_serves_again(endpoint: str, sdk: Platform) -> None:
    endpoint_id = Model.get(endpoint).id
    assert endpoint_id is not None
    [replica] = sdk.replicas(endpoint_id)
    expected = greedy(endpoint).output.text

    os.kill(replica.pid, signal.SIGKILL)

    eventually(  # the platform notices the exit and starts a new process
        lambda: sdk.replicas(endpoint_id),
        lambda current: bool(current) and current[0].pid != replica.pid,
        timeout=60,
        what=lambda: f"a new replica process{sdk.describe()}",
    )
    recovered = wait_for_status(endpoint, {ModelEndpointStatus.READY}, sdk)
    assert recovered.spec is not None and recovered.spec.deployment_state is not None
    assert recovered.spec.deployment_state.available_workers == 1
    assert greedy(endpoint).output.text == expected
    assert not process_alive(replica.pid, replica.start_time)


def test_delete_removes_the_endpoint_and_its_processes(endpoint: str, sdk: Platform) -> None:
    endpoint_id = Model.get(endpoint).id
    assert endpoint_id is not None
    replicas = sdk.replicas(endpoint_id) if sdk.data_dir is not None else []

    assert Model.delete(endpoint).deleted is True

    def gone() -> bool:
        try:
            Model.get(endpoint)
        except NotFoundError:
            return True
        return False

    eventually(gone, timeout=60, what=lambda: f"{endpoint} to be deleted{sdk.describe()}")
    with pytest.raises(NotFoundError):
        Completion.create(model=endpoint, prompt=PROMPT, max_new_tokens=5)
    for replica in replicas:
        assert not process_alive(replica.pid, replica.start_time), f"replica pid {replica.pid} still runs"
    if sdk.data_dir is not None:
        assert sdk.replicas(endpoint_id) == []
