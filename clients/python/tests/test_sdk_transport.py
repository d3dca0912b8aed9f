"""The SDK over real sockets against a scripted server: configuration, retries, timeouts, streams and tasks."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from llmengine import (
    AsyncCompletionStream,
    AsyncCompletionTask,
    Completion,
    CompletionStream,
    CompletionTask,
    Model,
    TaskStatus,
    _transport,
    api_engine,
)
from llmengine.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitExceededError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    UnauthorizedError,
    ValidationError,
)
from sdk_scripted_server import Reply, ScriptedServer

COMPLETION = {
    "request_id": "req-1",
    "output": {"text": " the quick", "num_prompt_tokens": 2, "num_completion_tokens": 2},
}


def ok(payload: Any) -> Reply:
    return Reply(body=json.dumps(payload).encode())


def error(status: int, detail: Any, **headers: str) -> Reply:
    return Reply(
        status=status,
        body=json.dumps({"detail": detail}).encode(),
        headers={"content-type": "application/json", **headers},
    )


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)


def token_event(text: str, finished: bool = False) -> dict[str, Any]:
    output: dict[str, Any] = {"text": text, "finished": finished}
    if finished:
        output |= {"num_prompt_tokens": 2, "num_completion_tokens": 3}
    return {"request_id": "req-s", "output": output, "error": None}


STREAM = sse(token_event(" the"), token_event(" quick"), token_event(" brown", finished=True))
SSE_HEADERS = {"content-type": "text/event-stream"}


def stream_reply(data: bytes = STREAM, piece: int = 5, pause: float = 0.0) -> Reply:
    """The stream cut into small pieces, with keep-alive comments in between, as a slow network might deliver it."""
    pieces = [b": ping\n\n"] + [data[i : i + piece] for i in range(0, len(data), piece)]
    return Reply(headers=SSE_HEADERS, chunks=pieces, pause=pause)


# --- configuration and the request on the wire -------------------------------------------------------------------


def test_sync_completion_sends_the_contracts_request_and_parses_the_answer(scripted: ScriptedServer) -> None:
    api_engine.set_api_key("sk-alice")
    scripted.script(ok(COMPLETION))
    response = Completion.create(
        model_name="demo", prompt="Hello", max_new_tokens=2, temperature=0, stop_sequences=["."]
    )
    assert response.output.text == " the quick"
    assert response.output.num_completion_tokens == 2
    (sent,) = scripted.received
    assert (sent.method, sent.path) == ("POST", "/v1/llm/completions-sync?model_endpoint_name=demo")
    assert json.loads(sent.body) == {
        "prompt": "Hello",
        "max_new_tokens": 2,
        "temperature": 0,
        "stop_sequences": ["."],
        "return_token_log_probs": False,
    }
    assert sent.headers["x-api-key"] == "sk-alice"
    assert base64.b64decode(sent.headers["authorization"].split()[1]) == b"sk-alice:"


def test_base_path_and_key_come_from_the_environment(scripted: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    api_engine.set_base_path(None)
    monkeypatch.setenv("LLM_ENGINE_BASE_PATH", scripted.url)
    monkeypatch.setenv("SCALE_API_KEY", "sk-from-env")
    scripted.script(ok({"model_endpoints": []}))
    assert Model.list().model_endpoints == []
    assert scripted.received[0].headers["x-api-key"] == "sk-from-env"


def test_without_any_key_the_published_clients_fallback_is_sent(scripted: ScriptedServer) -> None:
    scripted.script(ok({"model_endpoints": []}))
    Model.list()
    assert scripted.received[0].headers["x-api-key"] == "root"


def test_bad_arguments_fail_before_anything_is_sent(scripted: ScriptedServer) -> None:
    with pytest.raises(ValueError, match="temperature"):
        Completion.create(model="demo", prompt="Hello", temperature=2.0)
    with pytest.raises(ValidationError, match="model="):
        Completion.create(prompt="Hello")
    with pytest.raises(ValidationError, match="prompt is required"):
        Completion.submit(model="demo")
    assert scripted.received == []


# --- errors and retries --------------------------------------------------------------------------------------------


def test_busy_answers_are_retried_with_backoff_until_one_succeeds(
    scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    api_engine.set_api_key("sk-secret-key")
    scripted.script(error(503, "endpoint 'demo' is not ready: loading"), error(429, "slow down"), ok(COMPLETION))
    with caplog.at_level("INFO", logger="llmengine"):
        assert Completion.create(model="demo", prompt="Hello").output.text == " the quick"
    assert len(scripted.received) == 3
    # Each retry is explained in the log, which never contains the key.
    assert "HTTP 503, retry 1/2" in caplog.text
    assert "HTTP 429, retry 2/2" in caplog.text
    assert "sk-secret-key" not in caplog.text


def test_retries_are_capped_and_the_last_error_carries_the_servers_message(scripted: ScriptedServer) -> None:
    scripted.script(*[error(429, "too many requests for tenant alice")] * 5)
    with pytest.raises(RateLimitExceededError, match="too many requests for tenant alice"):
        Completion.create(model="demo", prompt="Hello")
    assert len(scripted.received) == 3  # the first try and two retries


@pytest.mark.parametrize(("status", "error_type"), [(404, NotFoundError), (422, BadRequestError), (500, ServerError)])
def test_other_errors_are_raised_at_once(scripted: ScriptedServer, status: int, error_type: type[Exception]) -> None:
    scripted.script(error(status, "Endpoint 'demo' not found"))
    with pytest.raises(error_type, match="Endpoint 'demo' not found"):
        Model.get("demo")
    assert len(scripted.received) == 1


def test_a_post_whose_answer_times_out_is_not_sent_again(scripted: ScriptedServer) -> None:
    # The gateway may be generating already: repeating the POST would do the work twice.
    scripted.script(Reply(stall_after=0, body=json.dumps(COMPLETION).encode()))
    with pytest.raises(APITimeoutError) as caught:
        Completion.create(model="demo", prompt="Hello", timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    assert len(scripted.received) == 1


def test_a_get_whose_answer_times_out_is_retried() -> None:
    # The timeout under test comes from the transport, so the retry that must succeed is not racing a short timeout.
    endpoint = {"name": "demo", "source": "hugging_face", "status": "READY", "inference_framework": "vllm"}
    attempts: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return httpx.Response(200, json=endpoint)

    api_engine.set_http_client(httpx.Client(transport=httpx.MockTransport(answer)))
    assert Model.get("demo").name == "demo"
    assert [r.method for r in attempts] == ["GET", "GET"]


def test_an_injected_client_carries_every_call() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=COMPLETION)

    api_engine.set_base_path("http://gateway.test/llm-engine")
    api_engine.set_http_client(httpx.Client(transport=httpx.MockTransport(answer), headers={"x-proxy-auth": "p"}))
    assert Completion.create(model="demo", prompt="Hello").output.text == " the quick"
    assert str(seen[0].url) == "http://gateway.test/llm-engine/v1/llm/completions-sync?model_endpoint_name=demo"
    assert seen[0].headers["x-proxy-auth"] == "p"


async def test_the_async_face_reuses_one_pooled_client_per_event_loop(scripted: ScriptedServer) -> None:
    scripted.script(ok(COMPLETION), ok(COMPLETION))
    await Completion.acreate(model="demo", prompt="Hello")
    first = await _transport.async_client()
    await Completion.acreate(model="demo", prompt="Hello")
    assert await _transport.async_client() is first and not first.is_closed


def test_the_async_pool_is_closed_when_its_event_loop_shuts_down(scripted: ScriptedServer) -> None:
    scripted.script(ok(COMPLETION))

    async def call() -> httpx.AsyncClient:
        await Completion.acreate(model="demo", prompt="Hello")
        return await _transport.async_client()

    client = asyncio.run(call())
    assert client.is_closed


def test_an_unreachable_gateway_is_a_connection_error_naming_the_url(scripted: ScriptedServer) -> None:
    scripted.stop()  # nothing listens on its port any more
    with pytest.raises(APIConnectionError, match=r"could not reach the LLM Engine gateway at http://127\.0\.0\.1"):
        Model.list()


# --- streams -------------------------------------------------------------------------------------------------------


def test_a_stream_yields_each_event_however_the_bytes_are_split(scripted: ScriptedServer) -> None:
    scripted.script(stream_reply(piece=3))
    stream = Completion.create(model="demo", prompt="Hello", stream=True)
    assert isinstance(stream, CompletionStream)
    events = list(stream)
    assert [e.output.text for e in events if e.output] == [" the", " quick", " brown"]
    assert events[-1].output is not None and events[-1].output.finished
    assert events[-1].output.num_completion_tokens == 3
    sent = scripted.received[0]
    assert sent.path == "/v1/llm/completions-stream?model_endpoint_name=demo"
    assert sent.headers["accept"] == "text/event-stream"


def test_leaving_a_stream_early_closes_the_connection(scripted: ScriptedServer) -> None:
    events = [token_event(f" t{i}") for i in range(200)]
    scripted.script(stream_reply(sse(*events), piece=64, pause=0.02))
    with Completion.create(model="demo", prompt="Hello", stream=True) as stream:
        first = next(stream)
    assert first.output is not None and first.output.text == " t0"
    scripted.wait_abandoned(1)


def test_an_error_before_the_first_event_raises_when_iteration_starts(scripted: ScriptedServer) -> None:
    scripted.script(error(404, "Endpoint 'nope' not found"))
    stream = Completion.create(model="nope", prompt="Hello", stream=True)
    with pytest.raises(NotFoundError, match="Endpoint 'nope' not found"):
        next(stream)


def test_a_busy_answer_before_the_stream_starts_is_retried(scripted: ScriptedServer) -> None:
    scripted.script(error(503, "warming up"), stream_reply())
    assert len(list(Completion.create(model="demo", prompt="Hello", stream=True))) == 3


def test_an_error_after_the_stream_started_arrives_as_the_last_event(scripted: ScriptedServer) -> None:
    failure = {
        "request_id": "req-s",
        "output": None,
        "error": {"status_code": 500, "content": {"error": "inference server crashed", "timestamp": "2026-11-22"}},
    }
    scripted.script(stream_reply(sse(token_event(" the"), failure)))
    events = list(Completion.create(model="demo", prompt="Hello", stream=True))
    assert events[0].output is not None
    assert events[-1].output is None
    assert events[-1].error is not None and events[-1].error.content.error == "inference server crashed"


def test_an_unreadable_event_raises_and_closes_the_connection(scripted: ScriptedServer) -> None:
    # A server speaking another dialect (OpenAI's "[DONE]" terminator) is reported, not silently skipped.
    tail = [sse(token_event(f" t{i}")) for i in range(200)]
    scripted.script(
        Reply(headers=SSE_HEADERS, chunks=[sse(token_event(" the")), b"data: [DONE]\n\n", *tail], pause=0.02)
    )
    stream = Completion.create(model="demo", prompt="Hello", stream=True)
    assert next(stream).output is not None
    with pytest.raises(MalformedResponseError, match="DONE"):
        next(stream)
    scripted.wait_abandoned(1)


def test_a_stream_that_goes_silent_times_out_between_events(scripted: ScriptedServer) -> None:
    scripted.script(
        Reply(headers=SSE_HEADERS, chunks=[sse(token_event(" the")), sse(token_event(" x"))], stall_after=1)
    )
    # The first event must arrive within the same timeout, so it is generous; the server never sends the second.
    stream = Completion.create(model="demo", prompt="Hello", stream=True, timeout=1.0)
    assert next(stream).output is not None
    with pytest.raises(APITimeoutError):
        next(stream)


# --- async twins ---------------------------------------------------------------------------------------------------


async def test_acreate_returns_the_completion(scripted: ScriptedServer) -> None:
    scripted.script(error(503, "busy"), ok(COMPLETION))
    response = await Completion.acreate(model="demo", prompt="Hello", max_new_tokens=2)
    assert response.output.text == " the quick"
    assert len(scripted.received) == 2


async def test_acreate_streams_as_an_async_iterator(scripted: ScriptedServer) -> None:
    scripted.script(stream_reply(piece=4))
    stream = await Completion.acreate(model="demo", prompt="Hello", stream=True)
    assert isinstance(stream, AsyncCompletionStream)
    texts = [event.output.text async for event in stream if event.output]
    assert texts == [" the", " quick", " brown"]


async def test_leaving_an_async_stream_early_closes_the_connection(scripted: ScriptedServer) -> None:
    scripted.script(stream_reply(sse(*[token_event(f" t{i}") for i in range(200)]), piece=64, pause=0.02))
    async with await Completion.acreate(model="demo", prompt="Hello", stream=True) as stream:
        first = await stream.__anext__()
    assert first.output is not None and first.output.text == " t0"
    scripted.wait_abandoned(1)


async def test_acreate_raises_the_typed_errors(scripted: ScriptedServer) -> None:
    scripted.script(error(401, "No credentials"), error(404, "Endpoint 'nope' not found"))
    with pytest.raises(UnauthorizedError, match="No credentials"):
        await Completion.acreate(model="demo", prompt="Hello")
    stream = await Completion.acreate(model="nope", prompt="Hello", stream=True)
    with pytest.raises(NotFoundError):
        await stream.__anext__()


async def test_an_async_post_whose_answer_times_out_is_not_sent_again(scripted: ScriptedServer) -> None:
    scripted.script(Reply(stall_after=0, body=json.dumps(COMPLETION).encode()))
    with pytest.raises(APITimeoutError):
        await Completion.acreate(model="demo", prompt="Hello", timeout=0.2)
    assert len(scripted.received) == 1


# --- async tasks ---------------------------------------------------------------------------------------------------


def task(status: str, result: Any = None, traceback: str | None = None) -> Reply:
    return ok({"task_id": "task-1", "status": status, "result": result, "traceback": traceback})


def test_submit_then_result_polls_until_the_task_succeeds(scripted: ScriptedServer) -> None:
    scripted.script(ok({"task_id": "task-1"}), task("PENDING"), task("STARTED"), task("SUCCESS", COMPLETION))
    handle = Completion.submit(model="demo", prompt="Hello", max_new_tokens=2)
    assert isinstance(handle, CompletionTask)
    assert handle.task_id == "task-1"
    assert handle.result(timeout=10).output.text == " the quick"
    paths = [r.path for r in scripted.received]
    assert paths[0] == "/v1/llm/completions-async?model_endpoint_name=demo"
    assert paths[1:] == ["/v1/async-tasks/task-1"] * 3
    # A finished task is not asked about again (its result may have expired on the server by then).
    assert handle.status() is TaskStatus.SUCCESS
    assert handle.result().output.text == " the quick"
    assert len(scripted.received) == 4


def test_result_raises_the_workers_reason_when_the_task_failed(scripted: ScriptedServer) -> None:
    scripted.script(task("FAILURE", traceback="Endpoint 'demo' was deleted"))
    with pytest.raises(TaskFailedError, match="Endpoint 'demo' was deleted"):
        CompletionTask("task-1").result(timeout=10)


def test_result_gives_up_after_its_timeout_and_can_be_called_again(scripted: ScriptedServer) -> None:
    scripted.script(*[task("PENDING")] * 200)
    handle = CompletionTask("task-1")
    with pytest.raises(TaskTimeoutError, match="still PENDING") as caught:
        handle.result(timeout=0.2)
    assert isinstance(caught.value, TimeoutError)
    scripted.replies.clear()
    scripted.script(task("SUCCESS", COMPLETION))
    assert handle.result(timeout=10).request_id == "req-1"


def test_status_of_an_unknown_task_is_not_found(scripted: ScriptedServer) -> None:
    scripted.script(error(404, "Task 'nope' not found"))
    with pytest.raises(NotFoundError, match="Task 'nope' not found"):
        CompletionTask("nope").status()


async def test_asubmit_and_await_the_result(scripted: ScriptedServer) -> None:
    scripted.script(ok({"task_id": "task-1"}), task("STARTED"), task("SUCCESS", COMPLETION))
    handle = await Completion.asubmit(model_name="demo", prompt="Hello")
    assert isinstance(handle, AsyncCompletionTask)
    assert await handle.status() is TaskStatus.STARTED
    assert (await handle.result(timeout=10)).output.text == " the quick"


async def test_async_result_times_out_while_the_task_is_pending(scripted: ScriptedServer) -> None:
    scripted.script(*[task("PENDING")] * 200)
    with pytest.raises(TaskTimeoutError):
        await AsyncCompletionTask("task-1").result(timeout=0.2)
