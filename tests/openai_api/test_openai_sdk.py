"""The ``openai`` Python SDK (pinned, in the peer-clients venv) against the real gateway and the bundled model
(SmolLM2-135M-Instruct served by the built-in inference server): what a user of ``openai.OpenAI(base_url=...)``
sees, including its typed exceptions."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import running_builtin_server
from model_engine_server.testing.tgi import running_instant_tgi
from tests.api.completion_support import ALICE, BOB, RunningGateway

pytestmark = pytest.mark.model

CHAT_ARGS = {
    "model": "smollm2-135m",
    "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Capital of France?"}],
    "max_tokens": 12,
    "temperature": 0,
}

OPENAI_SCRIPT = r"""
import asyncio, json, os
import openai

base, key = os.environ["BASE"] + "/v1", os.environ["KEY"]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
chat_args = json.loads(os.environ["CHAT_ARGS"])
text_args = dict(model="smollm2-135m", prompt="The capital of France is", max_tokens=8, temperature=0)
out = {}

chat = client.chat.completions.create(**chat_args)
out["chat"] = chat.model_dump()
chunks = list(client.chat.completions.create(**chat_args, stream=True, stream_options={"include_usage": True}))
out["chat_stream_text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
out["chat_stream_usage"] = chunks[-1].usage.model_dump()
out["chat_stream_ids"] = sorted({c.id for c in chunks})
completion = client.completions.create(**text_args)
out["completion"] = completion.model_dump()
out["completion_stream_text"] = "".join(c.choices[0].text for c in client.completions.create(**text_args, stream=True))
out["models"] = [model.id for model in client.models.list()]
raw = client.chat.completions.with_raw_response.create(**chat_args)
out["raw"] = {"status": raw.status_code, "type": raw.headers["content-type"], "model": raw.parse().model}

def error_of(call):
    try:
        call()
    except openai.APIStatusError as exc:
        return {"class": type(exc).__name__, "status": exc.status_code, "code": exc.code, "param": exc.param}
    return None

out["unknown"] = error_of(lambda: client.chat.completions.create(**{**chat_args, "model": "nope"}))
out["other_tenant"] = error_of(lambda: client.chat.completions.create(**{**chat_args, "model": "bobs-private"}))
out["bad"] = error_of(lambda: client.chat.completions.create(**{**chat_args, "temperature": 5}))
out["busy"] = error_of(lambda: client.chat.completions.create(**{**chat_args, "model": "busy"}))
out["no_key"] = error_of(lambda: openai.OpenAI(base_url=base, api_key="", max_retries=0).models.list())
received = []
try:
    for c in client.chat.completions.create(**{**chat_args, "model": "flaky"}, stream=True):
        received.append(c.choices[0].delta.content or "")
except openai.APIError as exc:  # the in-band error chunk
    out["mid_stream"] = {"class": type(exc).__name__, "message": exc.message, "received": "".join(received)}

async def main():
    aclient = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
    chat = await aclient.chat.completions.create(**chat_args)
    stream = await aclient.chat.completions.create(**chat_args, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    return chat.choices[0].message.content, text

out["async_chat"], out["async_stream_text"] = asyncio.run(main())
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in inference server with the bundled model, healthy."""
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    with running_builtin_server(log, threads=1) as running:
        running.wait_healthy()
        yield running.url


@pytest.fixture
async def platform(gateway: RunningGateway, model_server: str) -> AsyncIterator[RunningGateway]:
    async with running_instant_tgi(max_concurrent=0) as busy, running_instant_tgi(fail_after=2) as flaky:
        await gateway.add_endpoint("smollm2-135m", [model_server])  # the name `make run` gives it
        await gateway.add_endpoint("bobs-private", [model_server], owner=BOB)
        await gateway.add_endpoint("busy", [busy.url])
        await gateway.add_endpoint("flaky", [flaky.url])  # fails after its second token
        yield gateway


async def _run_peer(script: str, gateway: RunningGateway) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env |= {"BASE": gateway.url, "KEY": ALICE[0], "CHAT_ARGS": json.dumps(CHAT_ARGS)}
    # The gateway runs in this event loop: the blocking peer process waits in a thread.
    process = await asyncio.to_thread(run_peer_script, script, env, 300)
    assert process.returncode == 0, process.stderr[-3000:]
    return process.stdout


async def _run_openai_sdk(gateway: RunningGateway) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((await _run_peer(OPENAI_SCRIPT, gateway)).strip().splitlines()[-1])
    return result


async def test_the_documented_openai_example_runs_as_written(platform: RunningGateway) -> None:
    """docs/openai-compatibility.md's ``openai`` example, verbatim but for the gateway's address."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "openai-compatibility.md").read_text()
    section = doc.split("## The `openai` Python SDK", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    script = match.group(1).replace("http://127.0.0.1:5000", platform.url)

    lines = (await _run_peer(script, platform)).strip().splitlines()

    assert "Paris" in lines[0]  # "What is the capital of France?"
    assert lines[-1] == "['busy', 'flaky', 'smollm2-135m']"  # the story streamed in between
    assert len(" ".join(lines[1:-1]).split()) > 10


async def test_the_openai_sdk_works_against_the_gateway_and_the_bundled_model(
    platform: RunningGateway, model_server: str
) -> None:
    out = await _run_openai_sdk(platform)

    chat = out["chat"]
    answer = chat["choices"][0]["message"]["content"]
    # The gateway adds nothing to the answer: the engine's own OpenAI route says the same for the same request.
    async with httpx.AsyncClient(timeout=120) as client:
        direct = await client.post(f"{model_server}/v1/chat/completions", json={**CHAT_ARGS, "model": "tgi"})
    assert answer and answer == direct.json()["choices"][0]["message"]["content"]
    assert chat["model"] == "smollm2-135m" and chat["object"] == "chat.completion"
    assert chat["id"].startswith("chatcmpl-")
    assert chat["choices"][0]["finish_reason"] in ("stop", "length")
    # Temperature 0: the stream says exactly what the whole response said, with the same token counts.
    assert out["chat_stream_text"] == answer == out["async_chat"] == out["async_stream_text"]
    assert out["chat_stream_usage"] == chat["usage"]
    assert len(out["chat_stream_ids"]) == 1
    completion = out["completion"]
    assert completion["object"] == "text_completion" and completion["usage"]["completion_tokens"] > 0
    assert out["completion_stream_text"] == completion["choices"][0]["text"]
    assert out["models"] == ["busy", "flaky", "smollm2-135m"]  # bob's private endpoint is not listed
    assert out["raw"] == {"status": 200, "type": "application/json", "model": "smollm2-135m"}
    assert out["unknown"] == {"class": "NotFoundError", "status": 404, "code": "model_not_found", "param": "model"}
    assert out["other_tenant"] == out["unknown"]
    assert out["bad"] == {"class": "BadRequestError", "status": 400, "code": None, "param": "temperature"}
    assert out["busy"]["class"] == "RateLimitError"
    # A failure after the first chunk: the SDK raises on the in-band error chunk, after the text that came before.
    assert out["mid_stream"]["class"] == "APIError" and "failed mid-stream" in out["mid_stream"]["message"]
    assert out["mid_stream"]["received"] == " the quick"
    assert out["no_key"]["class"] == "AuthenticationError"
