"""TGI's HTTP protocol, field for field, against the real model."""

from __future__ import annotations

import httpx
import pytest

from tests.inference_server.conftest import MAX_INPUT_TOKENS, MAX_TOTAL_TOKENS
from tests.inference_server.sse import stream

pytestmark = pytest.mark.model

PROMPT = "The capital of France is"


def generate(client: httpx.Client, inputs: str = PROMPT, **parameters: object) -> httpx.Response:
    return client.post("/generate", json={"inputs": inputs, "parameters": {"max_new_tokens": 8, **parameters}})


def test_generate_greedy_returns_details_that_add_up(client: httpx.Client) -> None:
    response = generate(client, details=True)

    assert response.status_code == 200
    body = response.json()
    details = body["details"]
    assert details["finish_reason"] == "length"
    assert details["generated_tokens"] == 8 == len(details["tokens"])
    assert details["seed"] is None  # greedy: no seed, as TGI reports it
    assert details["prefill"] == []  # only with decoder_input_details
    assert "".join(t["text"] for t in details["tokens"]) == body["generated_text"]
    assert all(t["logprob"] <= 0 and t["special"] is False for t in details["tokens"])
    assert "Paris" in body["generated_text"]
    assert int(response.headers["x-generated-tokens"]) == 8


def test_greedy_is_repeatable_and_details_are_optional(client: httpx.Client) -> None:
    first, second = generate(client).json(), generate(client, temperature=0).json()

    assert first == second
    assert set(first) == {"generated_text"}


def test_decoder_input_details_scores_every_prompt_token(client: httpx.Client) -> None:
    details = generate(client, details=True, decoder_input_details=True).json()["details"]

    prefill = details["prefill"]
    assert "".join(t["text"] for t in prefill) == PROMPT
    assert prefill[0]["logprob"] is None  # nothing precedes the first token
    assert all(t["logprob"] < 0 for t in prefill[1:])


def test_return_full_text_prepends_the_prompt(client: httpx.Client) -> None:
    plain = generate(client).json()["generated_text"]
    full = generate(client, return_full_text=True).json()["generated_text"]

    assert full == PROMPT + plain


def test_stream_sends_one_event_per_token_and_the_text_last(client: httpx.Client) -> None:
    expected = generate(client).json()["generated_text"]

    status, events = stream(
        client, "/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 8, "details": True}}
    )

    assert status == 200
    assert [e["index"] for e in events] == list(range(1, 9))
    assert all(e["generated_text"] is None and e["details"] is None for e in events[:-1])
    last = events[-1]
    assert last["generated_text"] == expected == "".join(e["token"]["text"] for e in events)
    assert last["details"]["finish_reason"] == "length"
    assert last["details"]["generated_tokens"] == 8
    assert last["details"]["input_length"] == len(
        generate(client, decoder_input_details=True, details=True).json()["details"]["prefill"]
    )


def test_root_route_dispatches_on_stream(client: httpx.Client) -> None:
    expected = generate(client).json()["generated_text"]
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 8}}

    listed = client.post("/", json=body)
    status, events = stream(client, "/", {**body, "stream": True})

    assert listed.status_code == 200
    assert listed.json() == [{"generated_text": expected}]
    assert status == 200 and events[-1]["generated_text"] == expected


def test_stop_sequence_ends_generation_early(client: httpx.Client) -> None:
    free = generate(client, max_new_tokens=12).json()["generated_text"]
    stop = free.split()[1]  # a word the model produces after the first one

    body = generate(client, max_new_tokens=12, stop=[stop], details=True).json()

    assert body["details"]["finish_reason"] == "stop_sequence"
    assert stop in body["generated_text"]
    assert body["details"]["generated_tokens"] < 12
    assert free.startswith(body["generated_text"].split(stop)[0])


def test_same_seed_gives_same_sample_and_reports_it(client: httpx.Client) -> None:
    params = {"do_sample": True, "temperature": 1.3, "max_new_tokens": 12, "details": True}
    runs = [generate(client, "Write a story:", seed=seed, **params).json() for seed in (7, 7, 8, 9)]

    assert runs[0]["generated_text"] == runs[1]["generated_text"]
    assert runs[0]["details"]["seed"] == 7
    assert len({run["generated_text"] for run in runs}) > 1  # different seeds sample differently


def test_sampling_without_seed_reports_the_seed_it_drew(client: httpx.Client) -> None:
    drawn = generate(client, do_sample=True, details=True).json()["details"]["seed"]
    replay = generate(client, do_sample=True, details=True, seed=drawn).json()["details"]["seed"]

    assert isinstance(drawn, int) and replay == drawn


@pytest.mark.parametrize(
    ("inputs", "parameters", "message"),
    [
        ("", {}, "`inputs` cannot be empty"),
        (PROMPT, {"max_new_tokens": -3}, "`max_new_tokens` must be strictly positive"),
        (PROMPT, {"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        (PROMPT, {"max_new_tokens": 100_000}, f"must be <= {MAX_TOTAL_TOKENS}"),
        ("hello " * (MAX_INPUT_TOKENS + 10), {}, f"must have less than {MAX_INPUT_TOKENS} tokens"),
        (PROMPT, {"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
        (PROMPT, {"top_k": 0}, "`top_k` must be strictly positive"),
        (PROMPT, {"temperature": -1}, "`temperature` must be strictly positive"),
        (PROMPT, {"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences"),
        (PROMPT, {"max_new_tokens": "many"}, "max_new_tokens"),
    ],
)
def test_invalid_requests_are_422_validation_errors(
    client: httpx.Client, inputs: str, parameters: dict[str, object], message: str
) -> None:
    response = client.post("/generate", json={"inputs": inputs, "parameters": parameters})

    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"
    assert message in response.json()["error"]


def test_truncate_keeps_the_end_of_an_over_long_prompt(client: httpx.Client) -> None:
    response = generate(
        client, "hello " * (MAX_INPUT_TOKENS + 10), truncate=16, decoder_input_details=True, details=True
    )

    assert response.status_code == 200
    assert len(response.json()["details"]["prefill"]) == 16


@pytest.mark.parametrize("payload", [b'{"inputs": "x",', b"not json", b'{"parameters": {}}'])
def test_malformed_bodies_are_422(client: httpx.Client, payload: bytes) -> None:
    response = client.post("/generate", content=payload, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json()["error_type"] == "validation"


def test_stream_validation_errors_arrive_in_band(client: httpx.Client) -> None:
    status, events = stream(client, "/generate_stream", {"inputs": "", "parameters": {}})
    _, prefill_events = stream(
        client, "/generate_stream", {"inputs": PROMPT, "parameters": {"decoder_input_details": True}}
    )

    assert status == 200  # as in TGI: the stream has started, the error is its only event
    assert events == [{"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"}]
    assert prefill_events[0]["error_type"] == "validation"


def test_health_info_and_metrics(client: httpx.Client) -> None:
    generate(client)

    info = client.get("/info").json()
    metrics = client.get("/metrics").text

    assert client.get("/health").status_code == 200
    assert info["model_id"] == "smollm2-135m"
    assert info["max_input_tokens"] == MAX_INPUT_TOKENS and info["max_total_tokens"] == MAX_TOTAL_TOKENS
    assert info["max_concurrent_requests"] == 4 and info["version"]
    for name in (
        "tgi_request_count_total",
        "tgi_request_success_total",
        "tgi_queue_size",
        "tgi_batch_current_size",
        "tgi_request_duration_bucket",
        "tgi_request_queue_duration_bucket",
        "tgi_request_inference_duration_bucket",
        "tgi_request_generated_tokens_bucket",
        "tgi_request_time_to_first_token_bucket",
    ):
        assert name in metrics
    count = next(line for line in metrics.splitlines() if line.startswith("tgi_request_count_total"))
    assert float(count.split()[-1]) >= 1
