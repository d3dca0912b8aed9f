"""The published ``scale-llm-engine`` client, unchanged, against the real gateway (it lives in its own venv).

What our SDK creates, the published client must read, change and delete — and the other way round — and it must get
completions (sync, streamed, async) from a READY endpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from llmengine import LLMInferenceFramework, Model, ModelEndpointStatus, api_engine
from llmengine.errors import NotFoundError
from sdk_inprocess_gateway import BackgroundGateway

from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import Platform

PEER_SCRIPT = """
import json, os
from llmengine import Model
from llmengine.data_types import LLMInferenceFramework
from llmengine.errors import NotFoundError

ours, theirs = os.environ["OURS"], os.environ["THEIRS"]
out = {}
out["list"] = sorted(e.name for e in Model.list().model_endpoints)
got = Model.get(ours)
out["get"] = json.loads(got.json())
out["update"] = Model.update(ours, max_workers=3).endpoint_creation_task_id
created = Model.create(
    name=theirs,
    model="smollm2-135m",
    inference_framework_image_tag="latest",
    inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE,
    labels={"made-by": "published-client"},
)
out["create"] = created.endpoint_creation_task_id
out["delete"] = Model.delete(ours).deleted
try:
    Model.get("no-such-endpoint")
except NotFoundError as exc:
    out["not_found"] = str(exc)
print(json.dumps(out))
"""


def peer_env(base_path: str) -> dict[str, str]:
    """The published client's configuration: our gateway and the current test's key."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LLM_ENGINE_BASE_PATH": base_path,
        "SCALE_API_KEY": api_engine.get_api_key(),
        "LLM_ENGINE_DISABLE_VERSION_CHECK": "true",  # it would otherwise ask PyPI at import
    }


def run_published_client(gateway: Platform, ours: str, theirs: str) -> dict[str, Any]:
    env = peer_env(gateway.url) | {"OURS": ours, "THEIRS": theirs}
    result = run_peer_script(PEER_SCRIPT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


def test_the_published_client_reads_changes_and_deletes_what_our_sdk_made(gateway: Platform) -> None:
    ours, theirs = f"ours-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    Model.create(
        name=ours,
        model="smollm2-135m",
        inference_framework_image_tag="latest",
        inference_framework=LLMInferenceFramework.TEXT_GENERATION_INFERENCE,
        labels={"team": "search"},
    )

    out = run_published_client(gateway, ours, theirs)

    assert out["list"] == [ours]
    assert out["get"]["name"] == ours
    assert out["get"]["status"] == "UPDATE_PENDING"
    assert out["get"]["spec"]["labels"] == {"team": "search"}
    assert out["update"] and out["create"]
    assert out["delete"] is True
    assert "no-such-endpoint" in out["not_found"]

    # What the published client did is visible to ours, and its update left the other fields alone.
    changed = Model.get(ours)
    assert changed.status is ModelEndpointStatus.DELETE_IN_PROGRESS
    assert changed.spec is not None and changed.spec.deployment_state is not None
    assert changed.spec.deployment_state.max_workers == 3
    assert changed.spec.labels == {"team": "search"}
    made = Model.get(theirs)
    assert made.inference_framework is LLMInferenceFramework.TEXT_GENERATION_INFERENCE
    assert made.spec is not None and made.spec.labels == {"made-by": "published-client"}
    with pytest.raises(NotFoundError) as caught:
        Model.get("no-such-endpoint")
    assert str(caught.value) == out["not_found"]  # the same message through both clients


PEER_COMPLETIONS_SCRIPT = """
import asyncio, json, os
from llmengine import Completion

name = os.environ["ENDPOINT"]
out = {}
out["sync"] = json.loads(Completion.create(model=name, prompt="Hello there", max_new_tokens=4, temperature=0).json())
events = list(Completion.create(model=name, prompt="Hello", max_new_tokens=3, stream=True))
out["stream"] = [json.loads(e.json()) for e in events]

async def main():
    single = await Completion.acreate(model=name, prompt="Hello", max_new_tokens=2)
    stream = await Completion.acreate(model=name, prompt="Hello", max_new_tokens=2, stream=True)
    return single.output.text, [e.output.text async for e in stream]

out["async"], out["async_stream"] = asyncio.run(main())
print(json.dumps(out))
"""


def run_on_a_new_endpoint(completions: BackgroundGateway, script: str) -> tuple[str, dict[str, Any]]:
    """A READY endpoint of the current tenant, and what ``script`` (run by the published client) printed for it."""
    name = f"llm-{uuid.uuid4().hex[:8]}"
    completions.add_endpoint(name, api_engine.get_api_key(), completions.tgi)
    env = peer_env(completions.url) | {"ENDPOINT": name}
    result = run_peer_script(script, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return name, output


def test_the_published_client_gets_completions_sync_streamed_and_async(completions: BackgroundGateway) -> None:
    _, out = run_on_a_new_endpoint(completions, PEER_COMPLETIONS_SCRIPT)

    assert out["sync"]["output"]["text"] == " the quick brown fox"
    assert out["sync"]["output"]["num_completion_tokens"] == 4
    texts = [event["output"]["text"] for event in out["stream"]]
    assert "".join(texts) == " the quick brown"
    assert out["stream"][-1]["output"]["finished"] is True
    assert out["stream"][-1]["output"]["num_completion_tokens"] == 3
    assert out["async"] == " the quick"
    assert "".join(out["async_stream"]) == " the quick"


PEER_BAD_REQUEST_SCRIPT = """
import asyncio, json, os
import pydantic
from llmengine import Completion, Model
from llmengine.errors import BadRequestError

name = os.environ["ENDPOINT"]
invalid_completions = {
    "max_new_tokens=0": dict(prompt="Hi", max_new_tokens=0),
    "max_new_tokens=-1": dict(prompt="Hi", max_new_tokens=-1),
    "empty prompt": dict(prompt="", max_new_tokens=2),
    "temperature=1.5": dict(prompt="Hi", max_new_tokens=2, temperature=1.5),
    "temperature=-0.1": dict(prompt="Hi", max_new_tokens=2, temperature=-0.1),
    "top_p=0": dict(prompt="Hi", max_new_tokens=2, top_p=0),
    "top_p=1.5": dict(prompt="Hi", max_new_tokens=2, top_p=1.5),
    "top_k=-2": dict(prompt="Hi", max_new_tokens=2, top_k=-2),
    "presence_penalty=3": dict(prompt="Hi", max_new_tokens=2, presence_penalty=3),
    "frequency_penalty=-3": dict(prompt="Hi", max_new_tokens=2, frequency_penalty=-3),
    "max_new_tokens over the context": dict(prompt="Hi", max_new_tokens=10**6),
    "prompt over the context": dict(prompt="word " * 3000, max_new_tokens=2),
    "empty stop sequence": dict(prompt="Hi", max_new_tokens=2, stop_sequences=[""]),
    "five stop sequences": dict(prompt="Hi", max_new_tokens=2, stop_sequences=["a", "b", "c", "d", "e"]),
}

def outcome_of(exc):
    if isinstance(exc, BadRequestError):
        return "BadRequestError: " + str(exc)
    if isinstance(exc, (pydantic.ValidationError, ValueError)):
        return "refused by the client before sending"
    return type(exc).__name__ + ": " + str(exc)

def outcome(call):
    try:
        result = call()
        if hasattr(result, "__next__"):
            list(result)
        return "accepted"
    except Exception as exc:
        return outcome_of(exc)

async def async_outcome(fields, stream):
    try:
        result = await Completion.acreate(model=name, stream=stream, **fields)
        if stream:
            [event async for event in result]
        return "accepted"
    except Exception as exc:
        return outcome_of(exc)

out = {}
for label, fields in invalid_completions.items():
    for stream in (False, True):
        out[f"{label} stream={stream}"] = outcome(lambda: Completion.create(model=name, stream=stream, **fields))
        out[f"{label} acreate stream={stream}"] = asyncio.run(async_outcome(fields, stream))
invalid_creates = {
    "empty name": dict(name=""),
    "upper-case name": dict(name="Bad_Name"),
    "min_workers=-1": dict(min_workers=-1),
    "max_workers=0": dict(max_workers=0),
    "min above max": dict(min_workers=3, max_workers=2),
    "per_worker=0": dict(per_worker=0),
    "unknown model": dict(model="no-such-model"),
    "bad gpu_type": dict(gpu_type="nvidia-potato"),
    "bad memory": dict(memory="lots"),
}
for label, fields in invalid_creates.items():
    arguments = dict(name="fine-name", model="smollm2-135m", inference_framework_image_tag="latest",
                     min_workers=0, max_workers=1, per_worker=1, gpus=0, memory="1Gi", cpus=1, storage="1Gi",
                     gpu_type=None, endpoint_type="streaming")
    arguments.update(fields)
    out[f"create {label}"] = outcome(lambda: Model.create(**arguments))
print(json.dumps(out))
"""

# What the published client checks itself (its own pydantic rules: penalties >= 0, temperature, top_k, top_p and
# gpu_type); it raises before sending, so our server never sees these.
CHECKED_BY_THE_PUBLISHED_CLIENT = {
    "presence_penalty=3",
    "frequency_penalty=-3",
    "top_k=-2",
    "top_p=0",
    "top_p=1.5",
    "temperature=1.5",
    "temperature=-0.1",
    "create bad gpu_type",
}
COMPLETION_CALLS = ("acreate stream=False", "acreate stream=True", "stream=False", "stream=True")  # longest first


def test_the_published_client_raises_bad_request_for_every_invalid_parameter(completions: BackgroundGateway) -> None:
    name, out = run_on_a_new_endpoint(completions, PEER_BAD_REQUEST_SCRIPT)

    def case(label: str) -> str:
        return next((label.removesuffix(" " + call) for call in COMPLETION_CALLS if label.endswith(" " + call)), label)

    refused_locally = {label for label, outcome in out.items() if outcome == "refused by the client before sending"}
    assert {case(label) for label in refused_locally} <= CHECKED_BY_THE_PUBLISHED_CLIENT
    sent = {label: outcome for label, outcome in out.items() if label not in refused_locally}
    # Everything the client sends is a 400, so it raises BadRequestError: sync, streamed, async and async streamed.
    assert {label: outcome for label, outcome in sent.items() if not outcome.startswith("BadRequestError")} == {}
    sent_cases = {case(label) for label in sent}
    assert len(sent) == 4 * len({c for c in sent_cases if not c.startswith("create ")}) + 8
    for label in sent_cases - {c for c in sent_cases if c.startswith("create ")}:
        assert {f"{label} {call}" for call in COMPLETION_CALLS} <= set(sent), label
    # The message names the field that is wrong, and why.
    for call in COMPLETION_CALLS:
        assert "max_new_tokens" in out[f"max_new_tokens=0 {call}"]
        assert "prompt" in out[f"empty prompt {call}"]
        assert "prompt is too long" in out[f"prompt over the context {call}"]
        assert "exceeds the context length" in out[f"max_new_tokens over the context {call}"]
        assert "stop_sequences.0: String should have at least 1 character" in out[f"empty stop sequence {call}"]
        assert "stop_sequences: List should have at most 4 items" in out[f"five stop sequences {call}"]
    assert "name" in out["create empty name"]
    assert "min_workers" in out["create min above max"]
    assert "memory" in out["create bad memory"]
    assert [e.name for e in Model.list().model_endpoints] == [name]  # no invalid create left a record
