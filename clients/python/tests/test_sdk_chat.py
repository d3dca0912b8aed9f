"""``ChatCompletion`` through the real gateway app (OpenAI-compatible route) to the instant TGI server's Messages API:
token i is ``" " + VOCABULARY[i]``, a message counts one prompt token per word."""

from __future__ import annotations

import asyncio

import pytest
from llmengine import ChatCompletion, ChatCompletionStream, Completion
from llmengine.errors import BadRequestError, NotFoundError, ServerError, ValidationError
from sdk_inprocess_gateway import BackgroundGateway

from model_engine_server.testing.tgi import instant_text

MESSAGES = [{"role": "user", "content": "say four words"}]


def test_a_chat_completion_is_typed_and_reads_like_a_completion(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    reply = ChatCompletion.create(model=name, messages=MESSAGES, max_tokens=4, temperature=0)
    assert reply.choices[0].message.content == instant_text(4)
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == name and reply.id.startswith("chatcmpl-")
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
    assert reply.output.text == reply.outputs[0].text == instant_text(4)
    assert reply.output.num_completion_tokens == 4


def test_a_chat_stream_yields_chunks_ending_with_usage(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    with ChatCompletion.create(model=name, messages=MESSAGES, max_tokens=3, stream=True) as stream:
        assert isinstance(stream, ChatCompletionStream)
        chunks = list(stream)
    assert "".join(chunk.text for chunk in chunks) == instant_text(3)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert len({chunk.id for chunk in chunks}) == 1


def test_acreate_whole_and_streamed(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()

    async def both() -> tuple[str, str]:
        reply = await ChatCompletion.acreate(model=name, messages=MESSAGES, max_tokens=2)
        stream = await ChatCompletion.acreate(model=name, messages=MESSAGES, max_tokens=2, stream=True)
        return reply.output.text, "".join([chunk.text async for chunk in stream])

    assert asyncio.run(both()) == (instant_text(2), instant_text(2))


def test_errors_are_the_sdk_types_with_the_gateway_message(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    with pytest.raises(NotFoundError, match="does not exist"):
        ChatCompletion.create(model="no-such-endpoint", messages=MESSAGES)
    with pytest.raises(BadRequestError, match="top_k is not supported"):
        ChatCompletion.create(model=name, messages=MESSAGES, top_k=5)
    with pytest.raises(ValidationError, match="temperature"):
        ChatCompletion.create(model=name, messages=MESSAGES, temperature=3)
    failing = completions.new_endpoint("failing_tgi")
    with pytest.raises(ServerError, match="failed after it started"):
        list(ChatCompletion.create(model=failing, messages=MESSAGES, max_tokens=5, stream=True))


def test_completion_responses_also_offer_outputs(completions: BackgroundGateway) -> None:
    name = completions.new_endpoint()
    response = Completion.create(model=name, prompt="Hi", max_new_tokens=2)
    assert response.outputs == [response.output]
    assert response.outputs[0].text == instant_text(2)
