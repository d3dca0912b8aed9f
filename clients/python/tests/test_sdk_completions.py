"""Completions through the real gateway app with the SDK: sync, streamed, async-await, and their errors.

The upstream is the instant TGI server: token i is `" " + VOCABULARY[i]` with log-prob -(i % 4 + 1) / 4, and a
prompt counts one token per word — so every expected value below follows from the request.
"""

from __future__ import annotations

import uuid

import pytest
from llmengine import AsyncCompletionStream, Completion, CompletionStream, api_engine
from llmengine.errors import BadRequestError, NotFoundError, ServerError
from sdk_inprocess_gateway import BackgroundGateway

from model_engine_server.domain.entities import EndpointStatus
from model_engine_server.testing import eventually
from model_engine_server.testing.tgi import instant_text


def test_a_sync_completion_returns_the_text_and_token_counts(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    response = Completion.create(model=name, prompt="Hello there world", max_new_tokens=5, temperature=0)
    assert response.output.text == instant_text(5)
    assert response.output.num_completion_tokens == 5
    assert response.output.num_prompt_tokens == 3
    assert response.request_id
    assert response.output.tokens is None


def test_model_name_works_as_an_alias(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    assert Completion.create(model_name=name, prompt="Hi", max_new_tokens=2).output.text == instant_text(2)


def test_stop_sequences_end_the_completion(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    response = Completion.create(model=name, prompt="Hi", max_new_tokens=10, stop_sequences=[" fox"])
    assert response.output.text.startswith(" the quick brown")
    assert " jumps" not in response.output.text
    assert response.output.num_completion_tokens == 4


def test_token_log_probs_come_back_per_token(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    response = Completion.create(model=name, prompt="Hi", max_new_tokens=3, return_token_log_probs=True)
    assert response.output.tokens is not None
    assert [(t.token, t.log_prob) for t in response.output.tokens] == [
        (" the", -0.25),
        (" quick", -0.5),
        (" brown", -0.75),
    ]


def test_a_stream_yields_the_same_text_token_by_token(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    stream = Completion.create(model=name, prompt="Hello there", max_new_tokens=4, stream=True)
    assert isinstance(stream, CompletionStream)
    events = list(stream)
    outputs = [e.output for e in events if e.output is not None]
    assert len(outputs) == len(events)
    assert "".join(o.text for o in outputs) == instant_text(4)
    assert [o.finished for o in outputs][-1] is True
    assert not any(o.finished for o in outputs[:-1])
    assert (outputs[-1].num_prompt_tokens, outputs[-1].num_completion_tokens) == (2, 4)
    assert all(e.error is None for e in events)
    assert len({e.request_id for e in events}) == 1


def test_leaving_a_stream_early_stops_the_generation_upstream(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint("slow_tgi")
    before = completions.slow_tgi.cancelled
    with Completion.create(model=name, prompt="Hi", max_new_tokens=500, stream=True, timeout=30) as stream:
        first = next(stream)
    assert first.output is not None and first.output.text == " the"
    # The gateway notices the closed connection and cancels the upstream request.
    eventually(lambda: completions.slow_tgi.cancelled == before + 1, what="upstream generation cancelled")


def test_a_failure_mid_stream_arrives_as_the_last_event(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint("failing_tgi")
    events = list(Completion.create(model=name, prompt="Hi", max_new_tokens=10, stream=True))
    assert [e.output.text for e in events[:-1] if e.output] == [" the", " quick"]
    last = events[-1]
    assert last.output is None
    assert last.error is not None
    assert last.error.status_code >= 500
    assert last.error.content.error
    assert last.error.content.timestamp


def test_an_unknown_endpoint_is_not_found_for_sync_and_stream(completions: BackgroundGateway) -> None:
    with pytest.raises(NotFoundError, match="no-such-llm"):
        Completion.create(model="no-such-llm", prompt="Hi")
    with pytest.raises(NotFoundError, match="no-such-llm"):
        next(Completion.create(model="no-such-llm", prompt="Hi", stream=True))


def test_an_endpoint_that_is_not_ready_is_a_503_with_its_reason(completions: BackgroundGateway) -> None:
    name = f"llm-{uuid.uuid4().hex[:8]}"
    completions.add_endpoint(
        name, api_engine.get_api_key(), None, status=EndpointStatus.UPDATE_FAILED, reason="out of memory"
    )
    with pytest.raises(ServerError, match="out of memory") as caught:
        Completion.create(model=name, prompt="Hi")
    assert caught.value.status_code == 503


@pytest.mark.parametrize(
    ("fields", "field_named"),
    [({"prompt": ""}, "prompt"), ({"max_new_tokens": 1_000_000}, "max_new_tokens")],
)
def test_bad_input_is_a_bad_request_with_the_servers_reason(
    completions: BackgroundGateway, fields: dict[str, object], field_named: str
) -> None:
    name = completions.new_endpoint()
    arguments = {"model": name, "prompt": "Hi", "max_new_tokens": 5} | fields
    with pytest.raises(BadRequestError, match=field_named):
        Completion.create(**arguments)  # type: ignore[arg-type]


async def test_acreate_returns_the_completion(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    response = await Completion.acreate(model=name, prompt="Hello", max_new_tokens=3, temperature=0.5)
    assert response.output.text == instant_text(3)


async def test_acreate_streams_as_an_async_iterator(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    stream = await Completion.acreate(model=name, prompt="Hello", max_new_tokens=3, stream=True)
    assert isinstance(stream, AsyncCompletionStream)
    texts = [event.output.text async for event in stream if event.output]
    assert "".join(texts) == instant_text(3)


async def test_acreate_raises_typed_errors(completions: BackgroundGateway) -> None:
    with pytest.raises(NotFoundError):
        await Completion.acreate(model="no-such-llm", prompt="Hi")
    stream = await Completion.acreate(model="no-such-llm", prompt="Hi", stream=True)
    with pytest.raises(NotFoundError):
        await stream.__anext__()
