"""The engine adapters alone: request mapping, response and stream parsing, error translation. No I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from model_engine_server.domain.completions import CompletionRequest, StreamDelta, TokenOutput
from model_engine_server.domain.entities import InferenceFramework
from model_engine_server.domain.exceptions import (
    EndpointNotReadyError,
    InvalidRequestError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from model_engine_server.inference.adapters import (
    StreamParser,
    TgiAdapter,
    VllmAdapter,
    adapter_for,
    error_from_response,
)

TGI = TgiAdapter()
VLLM = VllmAdapter()


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest(**({"prompt": "hello", "max_new_tokens": 4, "temperature": 0.5} | fields))


def feed_all(parser: StreamParser, events: list[Any]) -> list[StreamDelta]:
    deltas = [
        delta
        for event in events
        for delta in parser.feed(event if isinstance(event, str) else orjson.dumps(event).decode())
    ]
    return deltas + parser.end()


def test_adapter_for_each_framework() -> None:
    assert isinstance(adapter_for(InferenceFramework.TEXT_GENERATION_INFERENCE), TgiAdapter)
    assert isinstance(adapter_for(InferenceFramework.VLLM), VllmAdapter)


# --- TGI -----------------------------------------------------------------------------------------------------------


def test_tgi_sampling_request_carries_every_field() -> None:
    body = TGI.generate_body(request(stop_sequences=["\n"], top_k=3, top_p=0.8, frequency_penalty=-0.5))
    assert body == {
        "inputs": "hello",
        "parameters": {
            "max_new_tokens": 4,
            "details": True,
            "decoder_input_details": True,
            "do_sample": True,
            "temperature": 0.5,
            "top_k": 3,
            "top_p": 0.8,
            "stop": ["\n"],
            "frequency_penalty": -0.5,
        },
    }


def test_tgi_leaves_out_values_it_would_reject_as_off() -> None:
    greedy = TGI.stream_body(request(temperature=0.0, top_k=3, top_p=0.5))["parameters"]
    assert greedy == {"max_new_tokens": 4, "details": True, "do_sample": False}
    disabled = TGI.stream_body(request(top_k=-1, top_p=1.0, frequency_penalty=0.0))["parameters"]
    assert disabled == {"max_new_tokens": 4, "details": True, "do_sample": True, "temperature": 0.5}


def test_tgi_refuses_presence_penalty_instead_of_dropping_it() -> None:
    with pytest.raises(InvalidRequestError, match="presence_penalty"):
        TGI.generate_body(request(presence_penalty=0.4))
    assert "presence_penalty" not in str(TGI.generate_body(request(presence_penalty=0.0)))


TGI_RESPONSE = {
    "generated_text": " a b",
    "details": {
        "finish_reason": "eos_token",
        "generated_tokens": 3,
        "prefill": [{"id": 1, "text": "<s>", "logprob": None}, {"id": 2, "text": "hello", "logprob": -2.0}],
        "tokens": [
            {"id": 5, "text": " a", "logprob": -0.1, "special": False},
            {"id": 6, "text": " b", "logprob": -0.2, "special": False},
            {"id": 0, "text": "</s>", "logprob": -0.3, "special": True},
        ],
    },
}


def test_tgi_response_gives_text_counts_and_tokens_on_request() -> None:
    with_tokens = TGI.parse_generate(TGI_RESPONSE, request(return_token_log_probs=True))
    assert with_tokens.text == " a b"
    assert with_tokens.num_prompt_tokens == 2
    assert with_tokens.num_completion_tokens == 3
    assert with_tokens.tokens == [TokenOutput(" a", -0.1), TokenOutput(" b", -0.2), TokenOutput("</s>", -0.3)]
    assert TGI.parse_generate([TGI_RESPONSE], request()).tokens is None  # list form, tokens not asked for


def test_tgi_response_without_text_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="generated_text"):
        TGI.parse_generate({"details": {}}, request())


def test_tgi_stream_yields_one_delta_per_token_and_counts_on_the_last() -> None:
    events = [
        {"token": {"id": 5, "text": " a", "logprob": -0.1, "special": False}, "details": None},
        {
            "token": {"id": 0, "text": "</s>", "logprob": -0.3, "special": True},
            "generated_text": " a",
            "details": {"finish_reason": "eos_token", "generated_tokens": 2, "input_length": 7},
        },
    ]
    deltas = feed_all(TGI.stream_parser(request(return_token_log_probs=True)), events)
    assert deltas == [
        StreamDelta(text=" a", finished=False, token=TokenOutput(" a", -0.1)),
        StreamDelta(
            text="", finished=True, num_prompt_tokens=7, num_completion_tokens=2, token=TokenOutput("</s>", -0.3)
        ),
    ]


def test_tgi_stream_in_band_error_and_early_end_are_upstream_errors() -> None:
    parser = TGI.stream_parser(request())
    with pytest.raises(UpstreamError, match="mid-stream: out of memory"):
        parser.feed('{"error": "out of memory", "error_type": "generation"}')
    unfinished = TGI.stream_parser(request())
    unfinished.feed('{"token": {"text": " a", "logprob": -1, "special": false}, "details": null}')
    with pytest.raises(UpstreamError, match="before the completion finished"):
        unfinished.end()
    with pytest.raises(UpstreamError, match="invalid stream event"):
        TGI.stream_parser(request()).feed("not json")


# --- vLLM ----------------------------------------------------------------------------------------------------------


def test_vllm_request_carries_every_field() -> None:
    body = VLLM.stream_body(
        request(
            stop_sequences=["."],
            top_k=3,
            top_p=0.8,
            presence_penalty=0.1,
            frequency_penalty=0.2,
            return_token_log_probs=True,
        )
    )
    assert body == {
        "prompt": "hello",
        "max_tokens": 4,
        "temperature": 0.5,
        "n": 1,
        "include_stop_str_in_output": True,
        "top_k": 3,
        "top_p": 0.8,
        "stop": ["."],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "logprobs": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    greedy = VLLM.generate_body(request(temperature=0.0, top_k=3, top_p=0.5))
    assert greedy == {
        "prompt": "hello",
        "max_tokens": 4,
        "temperature": 0.0,
        "n": 1,
        "include_stop_str_in_output": True,
    }


def test_vllm_response_gives_text_counts_and_tokens() -> None:
    body = {
        "choices": [
            {
                "text": " a b",
                "finish_reason": "length",
                "logprobs": {"tokens": [" a", " b"], "token_logprobs": [-0.1, -0.2]},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    output = VLLM.parse_generate(body, request(return_token_log_probs=True))
    assert (output.text, output.num_prompt_tokens, output.num_completion_tokens) == (" a b", 3, 2)
    assert output.tokens == [TokenOutput(" a", -0.1), TokenOutput(" b", -0.2)]
    with pytest.raises(UpstreamError, match="choices"):
        VLLM.parse_generate({"choices": []}, request())


def chunk(text: str, finish_reason: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}


def test_vllm_stream_finishes_on_usage_with_its_counts() -> None:
    events = [
        chunk(" a"),
        chunk(" b", "length"),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        "[DONE]",
    ]
    assert feed_all(VLLM.stream_parser(request()), events) == [
        StreamDelta(text=" a", finished=False),
        StreamDelta(text=" b", finished=False),
        StreamDelta(text="", finished=True, num_prompt_tokens=3, num_completion_tokens=2),
    ]


def test_vllm_stream_without_usage_finishes_on_done_with_counted_tokens() -> None:
    deltas = feed_all(VLLM.stream_parser(request()), [chunk(" a"), chunk(" b", "stop"), "[DONE]"])
    assert deltas[-1] == StreamDelta(text="", finished=True, num_prompt_tokens=None, num_completion_tokens=2)


def test_vllm_chunk_with_several_tokens_keeps_each_token_with_its_log_prob() -> None:
    logprobs = {"tokens": [" a", " b"], "token_logprobs": [-0.1, -0.2]}
    deltas = VLLM.stream_parser(request(return_token_log_probs=True)).feed(
        orjson.dumps(chunk(" a b", None, logprobs)).decode()
    )
    assert deltas == [
        StreamDelta(text=" a", finished=False, token=TokenOutput(" a", -0.1)),
        StreamDelta(text=" b", finished=False, token=TokenOutput(" b", -0.2)),
    ]


def test_vllm_stream_errors() -> None:
    with pytest.raises(UpstreamError, match="mid-stream: engine died"):
        VLLM.stream_parser(request()).feed('{"error": {"message": "engine died", "code": 500}}')
    with pytest.raises(UpstreamError, match="before the completion finished"):
        feed_all(VLLM.stream_parser(request()), [chunk(" a")])


# --- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            422,
            {"error": "Input validation error: too long", "error_type": "validation"},
            InvalidRequestError,
            "too long",
        ),
        (400, {"object": "error", "message": "max_tokens too large", "code": 400}, InvalidRequestError, "max_tokens"),
        (429, {"error": "Model is overloaded", "error_type": "overloaded"}, OverloadedError, "overloaded"),
        (503, {"error": "loading"}, EndpointNotReadyError, "loading"),
        (504, {"error": {"message": "slow"}}, UpstreamTimeoutError, "slow"),
        (500, {"error": "CUDA error", "error_type": "generation"}, UpstreamError, "HTTP 500: CUDA error"),
    ],
)
def test_engine_statuses_become_domain_errors(status: int, body: Any, kind: type, message: str) -> None:
    error = error_from_response(status, orjson.dumps(body))
    assert type(error) is kind
    assert message in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"object": "error", "message": "top_logprobs > 0 is not supported", "param": "top_logprobs", "code": 400},
        {"error": {"message": "top_logprobs > 0 is not supported", "type": "BadRequestError", "param": "top_logprobs"}},
    ],
)
def test_the_field_an_openai_style_refusal_names_is_kept(body: Any) -> None:
    error = error_from_response(400, orjson.dumps(body))
    assert isinstance(error, InvalidRequestError) and error.param == "top_logprobs"


def test_non_json_error_body_is_quoted_briefly() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>" + b"x" * 1000)
    assert isinstance(error, UpstreamError)
    assert "bad gateway" in error.message
    assert len(error.message) < 300
