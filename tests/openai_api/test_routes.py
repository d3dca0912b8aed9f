"""The OpenAI-compatible routes through the real gateway on a socket, against scripted engines speaking TGI's and
vLLM's OpenAI dialects (their real chunk shapes): requests as each engine needs them, responses in OpenAI's shapes."""

from __future__ import annotations

import orjson
import pytest

from model_engine_server.testing.tgi import InstantTgiServer, running_instant_tgi
from tests.api.completion_support import RunningGateway, running_fake_openai, serving_llm, wait_until
from tests.openai_api.support import BEARER, CHAT, COMPLETIONS, chat_text, decoded, post, stream_chunks

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name four words"}]


async def test_chat_through_tgi_is_an_openai_chat_completion(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    response = await post(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "max_tokens": 4, "temperature": 0})

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")  # TGI's own id is empty
    assert body["model"] == "llm"
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": " the quick brown fox"},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    # TGI was asked with its own model id and exactly the caller's fields.
    assert tgi.requests == [
        (CHAT, {"model": "tgi", "messages": MESSAGES, "max_tokens": 4, "temperature": 0.0}),
    ]


async def test_max_completion_tokens_bounds_a_tgi_answer(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"model": "llm", "messages": MESSAGES, "max_completion_tokens": 3, "max_tokens": 50}
    response = await post(gateway, CHAT, body)

    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3
    assert response.json()["choices"][0]["finish_reason"] == "length"
    # TGI's Messages API reads max_tokens only; OpenAI's newer name wins over the older one, as at OpenAI.
    assert tgi.requests[0][1]["max_tokens"] == 3 and "max_completion_tokens" not in tgi.requests[0][1]


async def test_text_parts_reach_the_engine_as_one_string(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    parts = [{"type": "text", "text": "Name "}, {"type": "text", "text": "four words"}]
    response = await post(gateway, CHAT, {"model": "llm", "messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 200
    assert tgi.requests[0][1]["messages"] == [{"role": "user", "content": "Name four words"}]


async def test_v2_paths_serve_the_same_handlers(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    chat = await post(gateway, "/v2/chat/completions", {"model": "llm", "messages": MESSAGES, "max_tokens": 2})
    completion = await post(gateway, "/v2/completions", {"model": "llm", "prompt": "a b", "max_tokens": 2})
    assert chat.json()["choices"][0]["message"]["content"] == " the quick"
    assert completion.json()["choices"][0]["text"] == " the quick"
    assert completion.json()["object"] == "text_completion"


async def test_tgi_answers_n_choices_and_prompt_lists_one_request_per_choice(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"model": "llm", "prompt": ["a b", "c"], "n": 2, "max_tokens": 2}
    response = await post(gateway, COMPLETIONS, body)
    chat = await post(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "n": 3, "max_tokens": 1})

    assert response.status_code == 200, response.text
    assert [(c["index"], c["text"]) for c in response.json()["choices"]] == [(i, " the quick") for i in range(4)]
    assert response.json()["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
    assert sorted(request["prompt"] for _, request in tgi.requests[:4]) == ["a b", "a b", "c", "c"]
    assert all("n" not in request for _, request in tgi.requests)
    assert [c["message"]["content"] for c in chat.json()["choices"]] == [" the"] * 3


async def test_chat_stream_through_tgi_matches_the_sync_text(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"model": "llm", "messages": MESSAGES, "max_tokens": 5, "temperature": 0, "stop": ["fox"]}
    sync = (await post(gateway, CHAT, body)).json()
    response, payloads = await stream_chunks(gateway, CHAT, {**body, "stream": True})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = decoded(payloads)
    assert chat_text(chunks) == sync["choices"][0]["message"]["content"] == " the quick brown fox"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {chunk["model"] for chunk in chunks} == {"llm"}
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None, None, None, "stop"]
    assert all("usage" not in chunk for chunk in chunks)  # not asked for: the gateway's own usage chunk is dropped
    # The engine is always asked for usage (the gateway's token counters need it).
    assert tgi.requests[-1][1]["stream_options"] == {"include_usage": True}


async def test_include_usage_gives_the_sync_counts(gateway: RunningGateway, tgi: InstantTgiServer) -> None:
    await gateway.add_endpoint("llm", [tgi.url])
    body = {"model": "llm", "prompt": "one two three", "max_tokens": 3}
    sync = (await post(gateway, COMPLETIONS, body)).json()
    _, payloads = await stream_chunks(
        gateway, COMPLETIONS, {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    chunks = decoded(payloads)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == sync["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks[:-1]) == sync["choices"][0]["text"]


async def test_vllm_gets_its_served_model_name_and_multiple_choices(gateway: RunningGateway) -> None:
    async with running_fake_openai() as vllm:
        await gateway.add_endpoint("llm", [vllm.url], framework="vllm")
        body = {"model": "llm", "prompt": ["a b", "c"], "n": 2, "max_tokens": 2, "top_k": 5, "min_p": 0.1}
        response = await post(gateway, COMPLETIONS, body)
        chat = await post(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "n": 2, "max_completion_tokens": 3})

    assert response.status_code == 200, response.text
    assert [choice["index"] for choice in response.json()["choices"]] == [0, 1, 2, 3]
    assert response.json()["model"] == "llm"
    assert vllm.requests[0] == {**body, "model": "smollm2-135m"}  # the zoo name the orchestrators serve it under
    assert chat.status_code == 200, chat.text
    assert [choice["message"]["content"] for choice in chat.json()["choices"]] == [" the quick brown"] * 2
    assert vllm.requests[1]["model"] == "smollm2-135m"


async def test_vllm_chat_stream_keeps_the_role_chunk_and_usage(gateway: RunningGateway) -> None:
    async with running_fake_openai() as vllm:
        await gateway.add_endpoint("llm", [vllm.url], framework="vllm")
        body = {"model": "llm", "messages": MESSAGES, "max_tokens": 3, "stream": True}
        _, payloads = await stream_chunks(gateway, CHAT, {**body, "stream_options": {"include_usage": True}})

    chunks = decoded(payloads)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chat_text(chunks) == " the quick brown"
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    assert {chunk["id"] for chunk in chunks} != {"chatcmpl-vllm"}  # the gateway's id, one per request


@pytest.mark.parametrize("framework", ["text_generation_inference", "vllm"])
async def test_failure_after_the_first_chunk_is_one_error_chunk_then_done(
    gateway: RunningGateway, framework: str
) -> None:
    async with serving_llm(gateway, framework, fail_after=2):
        response, payloads = await stream_chunks(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "stream": True})

    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    error = orjson.loads(payloads[-2])
    assert set(error) == {"error"}
    assert error["error"]["type"] == "server_error"
    assert "failed mid-stream" in error["error"]["message"]
    assert chat_text([orjson.loads(p) for p in payloads[:-2]]) == " the quick"


async def test_client_disconnect_cancels_the_engine_stream(gateway: RunningGateway) -> None:
    async with running_instant_tgi(token_delay=0.05) as slow:
        await gateway.add_endpoint("llm", [slow.url])
        body = {"model": "llm", "messages": MESSAGES, "max_tokens": 400, "stream": True}
        async with gateway.client() as client, client.stream("POST", CHAT, json=body, headers=BEARER) as response:
            first = await anext(line async for line in response.aiter_lines() if line.startswith("data: "))
            assert orjson.loads(first[6:])["choices"][0]["delta"]["content"] == " the"
        await wait_until(lambda: slow.cancelled == 1)
        await wait_until(lambda: gateway.app.state.completions.upstream.in_flight(slow.url) == 0)


async def test_metrics_count_openai_requests_and_tokens_by_protocol(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    await gateway.add_endpoint("llm", [tgi.url])

    async def sample(prefix: str) -> float:
        async with gateway.client() as client:
            text = (await client.get("/metrics")).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))

    requests = 'llm_engine_completion_requests_total{kind="stream",outcome="200",protocol="openai"}'
    tokens = 'llm_engine_completion_tokens_total{protocol="openai",type="completion"}'
    ttft = 'llm_engine_completion_time_to_first_token_seconds_count{protocol="openai"}'
    before = [await sample(requests), await sample(tokens), await sample(ttft)]
    await stream_chunks(gateway, CHAT, {"model": "llm", "messages": MESSAGES, "max_tokens": 3, "stream": True})
    after = [await sample(requests), await sample(tokens), await sample(ttft)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 3, 1]


async def test_chat_template_override_reaches_the_engine_with_every_chat_request(
    gateway: RunningGateway, tgi: InstantTgiServer
) -> None:
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    async with running_fake_openai() as vllm:
        await gateway.add_endpoint("on-tgi", [tgi.url], chat_template_override=template)
        await gateway.add_endpoint("on-vllm", [vllm.url], framework="vllm", chat_template_override=template)
        await post(gateway, CHAT, {"model": "on-tgi", "messages": MESSAGES, "max_tokens": 1})
        await post(gateway, CHAT, {"model": "on-vllm", "messages": MESSAGES, "max_tokens": 1})
        await post(gateway, COMPLETIONS, {"model": "on-vllm", "prompt": "x", "max_tokens": 1})
        async with gateway.client() as client:
            shown = (await client.get("/v1/llm/model-endpoints/on-vllm", headers=BEARER)).json()
            await client.put("/v1/llm/model-endpoints/on-tgi", json={"chat_template_override": None}, headers=BEARER)
            cleared = (await client.get("/v1/llm/model-endpoints/on-tgi", headers=BEARER)).json()

    assert tgi.requests[0][1]["chat_template"] == template
    assert vllm.requests[0]["chat_template"] == template
    assert "chat_template" not in vllm.requests[1]  # completions have no template
    assert shown["chat_template_override"] == template
    assert cleared["chat_template_override"] is None
