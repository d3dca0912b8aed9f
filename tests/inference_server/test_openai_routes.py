"""The OpenAI routes, shaped as vLLM serves them, so vLLM-protocol endpoints can run on the built-in server."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.inference_server.sse import data_lines, stream

pytestmark = pytest.mark.model

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def tgi_text(client: httpx.Client, inputs: str, tokens: int) -> str:
    body = {"inputs": inputs, "parameters": {"max_new_tokens": tokens}}
    text: str = client.post("/generate", json=body).json()["generated_text"]
    return text


def test_completion_matches_tgi_greedy_and_reports_usage(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0})

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "text_completion" and body["model"] == "smollm2-135m"
    assert body["choices"][0]["text"] == tgi_text(client, PROMPT, 6)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def test_completion_cuts_the_stop_string_out(client: httpx.Client) -> None:
    free = tgi_text(client, PROMPT, 8)
    stop = free.split()[1]

    body = client.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "stop": [stop]}
    ).json()

    assert body["choices"][0]["text"] == free[: free.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"


def test_completion_stream_ends_with_done_and_usage(client: httpx.Client) -> None:
    body = {
        "prompt": PROMPT,
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/completions", json=body) as response:
        lines = list(data_lines(response))

    chunks = [json.loads(line) for line in lines[:-1]]
    assert lines[-1] == "[DONE]"
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == tgi_text(client, PROMPT, 6)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6


def test_chat_completion_uses_the_chat_template(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 20, "temperature": 0})

    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "chat.completion"
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and "Paris" in message["content"]
    assert "<|im_end|>" not in message["content"]
    assert body["choices"][0]["finish_reason"] == "stop"  # the model ended its turn
    assert body["usage"]["prompt_tokens"] > len(MESSAGES[0]["content"].split())  # the template's tokens count too


def test_chat_completion_stream_sends_role_then_deltas(client: httpx.Client) -> None:
    alone = client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 20, "temperature": 0})

    status, chunks = stream(
        client, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 20, "temperature": 0, "stream": True}
    )

    assert status == 200
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == alone.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_chat_template_in_the_request_replaces_the_tokenizers(client: httpx.Client) -> None:
    template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"  # the bare text, no roles
    chat = client.post(
        "/v1/chat/completions",
        json={"messages": MESSAGES, "max_tokens": 6, "temperature": 0, "chat_template": template},
    ).json()
    plain = client.post("/v1/completions", json={"prompt": MESSAGES[0]["content"], "max_tokens": 6, "temperature": 0})

    assert chat["usage"] == plain.json()["usage"]
    assert chat["choices"][0]["message"]["content"] == plain.json()["choices"][0]["text"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", {"prompt": "", "max_tokens": 4}),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": -1}),
        ("/v1/completions", {"prompt": PROMPT, "n": 2}),
        ("/v1/completions", {"max_tokens": 4}),
        ("/v1/chat/completions", {"messages": [], "max_tokens": 4}),
        ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 100_000}),
    ],
)
def test_invalid_openai_requests_are_400(client: httpx.Client, path: str, body: dict[str, object]) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 400
    assert response.json()["object"] == "error" and response.json()["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "logprobs": True, "top_logprobs": 2}, "top_logprobs"),
        ("/v1/completions", {"prompt": PROMPT, "logprobs": 2}, "logprobs"),
    ],
)
def test_alternatives_are_refused_naming_the_field(
    client: httpx.Client, path: str, body: dict[str, object], param: str
) -> None:
    response = client.post(path, json=body)

    assert response.status_code == 400
    assert response.json()["param"] == param and param in response.json()["message"]


def test_chat_logprobs_are_the_answers_tokens_whole_and_streamed(client: httpx.Client) -> None:
    body = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0, "logprobs": True}
    whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]
    status, chunks = stream(client, "/v1/chat/completions", {**body, "stream": True})

    entries = whole["logprobs"]["content"]
    assert "".join(entry["token"] for entry in entries) == whole["message"]["content"]
    assert all(entry["logprob"] <= 0 and entry["top_logprobs"] == [] for entry in entries)
    assert all(bytes(entry["bytes"]).decode() == entry["token"] for entry in entries)
    streamed = [entry for c in chunks[1:] for entry in (c["choices"][0]["logprobs"] or {}).get("content", [])]
    assert status == 200 and streamed == entries


def test_completion_logprobs_stream_as_they_are_returned_whole(client: httpx.Client) -> None:
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 0}
    whole = client.post("/v1/completions", json=body).json()["choices"][0]
    status, chunks = stream(client, "/v1/completions", {**body, "stream": True})

    logprobs = whole["logprobs"]
    assert "".join(logprobs["tokens"]) == whole["text"] and len(logprobs["token_logprobs"]) == 6
    streamed = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert status == 200
    assert [t for part in streamed for t in part["tokens"]] == logprobs["tokens"]
    assert [v for part in streamed for v in part["token_logprobs"]] == logprobs["token_logprobs"]
    assert [o for part in streamed for o in part["text_offset"]] == logprobs["text_offset"]
