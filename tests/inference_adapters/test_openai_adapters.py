"""The OpenAI dialects of TGI and vLLM, on their real wire shapes (as their servers write them): what the gateway
sends each engine, and how their answers and chunks become OpenAI's shapes under the gateway's id."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from model_engine_server.domain.entities import EndpointConfig, InferenceFramework
from model_engine_server.domain.exceptions import InvalidRequestError, UpstreamError
from model_engine_server.inference.openai_adapters import (
    OpenAiKind,
    OpenAiNormaliser,
    merge_responses,
    openai_engine_for,
)

TGI = openai_engine_for(InferenceFramework.TEXT_GENERATION_INFERENCE)
VLLM = openai_engine_for(InferenceFramework.VLLM)
CONFIG = EndpointConfig(model_name="llama-3-8b-instruct")
MESSAGES = [{"role": "user", "content": "Hi"}]

# TGI 3.x Messages API: empty id, the model path, role in every delta, "usage": null until the usage-only chunk.
TGI_CHUNKS = [
    '{"object":"chat.completion.chunk","id":"","created":1732000000,"model":"meta-llama/Llama-3.1-8B-Instruct",'
    '"system_fingerprint":"3.0.1-native","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"},'
    '"logprobs":null,"finish_reason":null}],"usage":null}',
    '{"object":"chat.completion.chunk","id":"","created":1732000000,"model":"meta-llama/Llama-3.1-8B-Instruct",'
    '"system_fingerprint":"3.0.1-native","choices":[{"index":0,"delta":{"role":"assistant","content":"!"},'
    '"logprobs":null,"finish_reason":"eos_token"}],"usage":null}',
    '{"object":"chat.completion.chunk","id":"","created":1732000000,"model":"meta-llama/Llama-3.1-8B-Instruct",'
    '"system_fingerprint":"3.0.1-native","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,'
    '"total_tokens":11}}',
    "[DONE]",
]
# vLLM: a role-only first chunk, content deltas, stop_reason beside finish_reason, then the usage chunk.
VLLM_CHUNKS = [
    '{"id":"chatcmpl-8f2","object":"chat.completion.chunk","created":1732000001,"model":"llama-3-8b-instruct",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}',
    '{"id":"chatcmpl-8f2","object":"chat.completion.chunk","created":1732000001,"model":"llama-3-8b-instruct",'
    '"choices":[{"index":0,"delta":{"content":"Hello!"},"logprobs":null,"finish_reason":"stop","stop_reason":null}]}',
    '{"id":"chatcmpl-8f2","object":"chat.completion.chunk","created":1732000001,"model":"llama-3-8b-instruct",'
    '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}',
    "[DONE]",
]


def normaliser(kind: OpenAiKind = OpenAiKind.CHAT, *, include_usage: bool = False) -> OpenAiNormaliser:
    return OpenAiNormaliser(kind, "abc123", 1764450000, "my-endpoint", include_usage=include_usage)


def run(chunks: list[str], **kwargs: Any) -> tuple[OpenAiNormaliser, list[dict[str, Any]]]:
    state = normaliser(**kwargs)
    out = [event for data in chunks if (event := state.chunk(data)) is not None]
    state.end()
    return state, [orjson.loads(event.removeprefix(b"data: ")) for event in out]


@pytest.mark.parametrize("chunks", [TGI_CHUNKS, VLLM_CHUNKS], ids=["tgi", "vllm"])
def test_chunks_get_the_gateway_id_and_the_endpoint_name(chunks: list[str]) -> None:
    state, events = run(chunks)
    assert {(e["id"], e["created"], e["model"], e["object"]) for e in events} == {
        ("chatcmpl-abc123", 1764450000, "my-endpoint", "chat.completion.chunk")
    }
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == "Hello!"
    assert events[-1]["choices"][0]["finish_reason"] == "stop"  # TGI's eos_token in OpenAI's words
    assert all("usage" not in e for e in events)  # the usage chunk was the gateway's own request
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (9, 2)


@pytest.mark.parametrize("chunks", [TGI_CHUNKS, VLLM_CHUNKS], ids=["tgi", "vllm"])
def test_the_usage_chunk_passes_when_the_client_asked(chunks: list[str]) -> None:
    _, events = run(chunks, include_usage=True)
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


@pytest.mark.parametrize(
    "error",
    [
        '{"error":"Request failed during generation: Server error: CUDA out of memory","error_type":"generation"}',
        '{"error":{"object":"error","message":"engine dead","type":"InternalServerError","param":null,"code":500}}',
        '{"object":"error","message":"engine dead","type":"InternalServerError","param":null,"code":500}',
    ],
    ids=["tgi", "vllm", "vllm-old"],
)
def test_in_band_engine_errors_raise(error: str) -> None:
    state = normaliser()
    assert state.chunk(VLLM_CHUNKS[0]) is not None
    with pytest.raises(UpstreamError, match="failed mid-stream"):
        state.chunk(error)


def test_a_stream_that_ends_before_finishing_is_an_error() -> None:
    state = normaliser()
    state.chunk(TGI_CHUNKS[0])
    with pytest.raises(UpstreamError, match="before the completion finished"):
        state.end()


def test_whole_responses_are_rewritten_the_same_way() -> None:
    tgi_completion = {
        "id": "",
        "object": "text_completion",
        "created": 1,
        "model": "tgi",
        "system_fingerprint": "3.0.1-native",
        "choices": [{"index": 0, "text": " world", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    state = normaliser(OpenAiKind.COMPLETIONS)
    body = state.response(tgi_completion)
    assert (body["id"], body["model"], body["object"]) == ("cmpl-abc123", "my-endpoint", "text_completion")
    assert body["choices"] == tgi_completion["choices"]
    assert state.usage.completion_tokens == 1
    with pytest.raises(UpstreamError):
        state.response({"object": "error", "message": "nope"})


def test_requests_name_each_engines_model_and_ask_streams_for_usage() -> None:
    body = {"model": "my-endpoint", "messages": MESSAGES, "stream": True}
    assert TGI.request_bodies(OpenAiKind.CHAT, body, CONFIG) == [
        {**body, "model": "tgi", "stream_options": {"include_usage": True}}
    ]
    [vllm] = VLLM.request_bodies(OpenAiKind.CHAT, {**body, "stream": False}, CONFIG)
    assert vllm["model"] == "llama-3-8b-instruct"
    [tgi] = TGI.request_bodies(OpenAiKind.COMPLETIONS, {"prompt": ["one"], "echo": False}, CONFIG)
    assert tgi["prompt"] == "one"
    [batch] = VLLM.request_bodies(OpenAiKind.COMPLETIONS, {"prompt": ["a", "b"], "n": 3}, CONFIG)
    assert (batch["prompt"], batch["n"]) == (["a", "b"], 3)  # vLLM answers every choice itself


def test_tgi_gets_one_request_per_choice_and_the_answers_are_joined() -> None:
    bodies = TGI.request_bodies(OpenAiKind.COMPLETIONS, {"prompt": ["a b", "c"], "n": 2}, CONFIG)
    assert [(body["prompt"], "n" in body) for body in bodies] == [
        ("a b", False),
        ("a b", False),
        ("c", False),
        ("c", False),
    ]
    assert len(TGI.request_bodies(OpenAiKind.CHAT, {"messages": MESSAGES, "n": 3}, CONFIG)) == 3

    def answer(text: str, prompt_tokens: int) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
        return {"id": "", "object": "text_completion", "model": "tgi", "choices": [choice], "usage": usage}

    merged = merge_responses([answer("x", 2), answer("y", 2), answer("z", 1), answer("w", 1)], n=2)
    assert isinstance(merged, dict)
    assert [(c["index"], c["text"]) for c in merged["choices"]] == [(0, "x"), (1, "y"), (2, "z"), (3, "w")]
    assert merged["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 2, "stream": True}, "n"),
        ({"prompt": ["a", "b"], "stream": True}, "prompt"),
        ({"n": 200}, "n"),
        ({"top_k": 4}, "top_k"),
        ({"min_p": 0.1}, "min_p"),
        ({"echo": True}, "echo"),
    ],
)
def test_tgi_refuses_what_it_cannot_do(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        TGI.request_bodies(OpenAiKind.COMPLETIONS, {"prompt": "x", **body}, CONFIG)
    assert refused.value.param == param
