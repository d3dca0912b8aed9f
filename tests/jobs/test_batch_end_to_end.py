"""Batch completions end to end on the bundled model: the published client against ``model-engine serve``.

One platform for the module; each job loads SmolLM2-135M in its own worker process, so the jobs here are few.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_engine_server.orchestration.local.processes import process_alive
from tests.jobs.platform import MODEL_CACHE, Platform, running_platform

pytestmark = pytest.mark.model

# Prompts of clearly different lengths: each result's num_prompt_tokens says which prompt it answers.
PROMPTS = [f"Count to {n}: " + "one " * n for n in range(1, 13)]
CHUNK = 4


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("batch-platform"), chunk_size=CHUNK) as running:
        yield running


@pytest.fixture(scope="module")
def prompt_token_counts() -> list[int]:
    from transformers import AutoTokenizer

    from model_engine_server.inference.model_loading import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m", MODEL_CACHE)))
    return [len(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in PROMPTS]


CLIENT_FLOW = """
import json, sys, time
from llmengine import Completion, CreateBatchCompletionsModelConfig, File

path, output, use_v2 = sys.argv[1], sys.argv[2], sys.argv[3] == "v2"
uploaded = File.upload(open(path, "rb"))
job = Completion.batch_create(
    output_data_path=output,
    model_config=CreateBatchCompletionsModelConfig(model="smollm2-135m", labels={"team": "evals"}),
    input_data_path=uploaded.id,
    data_parallelism=2,
    use_v2=use_v2,
)
job_id = job.job_id
seen = []
while True:
    state = Completion.get_batch_completion(job_id)["job"]
    seen.append(state["status"])
    if state["status"] in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.5)
content = File.download(state["metadata"]["output_file_id"]).content if state["status"] == "completed" else None
print(json.dumps({"job": state, "statuses": seen, "output": content}))
"""


def _run_client(platform: Platform, tmp_path: Path, content: object, version: str) -> dict[str, object]:
    path = tmp_path / f"prompts-{version}.json"
    path.write_text(json.dumps(content))
    output = (tmp_path / f"results-{version}.json").as_uri()
    script = CLIENT_FLOW.replace("sys.argv[1], sys.argv[2], sys.argv[3]", f"{str(path)!r}, {output!r}, {version!r}")
    return platform.peer(script)


def test_published_client_batch_v1_and_v2(platform: Platform, tmp_path: Path, prompt_token_counts: list[int]) -> None:
    v1 = _run_client(platform, tmp_path, {"prompts": PROMPTS, "max_new_tokens": 8, "temperature": 0.0}, "v1")
    job = v1["job"]
    assert isinstance(job, dict)
    assert job["status"] == "completed", job
    assert job["progress"] == {"done": len(PROMPTS), "total": len(PROMPTS)}
    assert job["metadata"]["team"] == "evals"
    results = json.loads(str(v1["output"]))
    assert [r["num_prompt_tokens"] for r in results] == prompt_token_counts  # every prompt once, in order
    assert all(1 <= r["num_completion_tokens"] <= 8 and r["text"] for r in results)
    assert json.loads((tmp_path / "results-v1.json").read_text()) == results

    requests = [{"prompt": p, "max_tokens": 8, "temperature": 0.0} for p in PROMPTS]
    v2 = _run_client(platform, tmp_path, requests, "v2")
    assert v2["job"]["status"] == "completed", v2["job"]  # type: ignore[index]
    completions = json.loads(str(v2["output"]))
    assert [c["object"] for c in completions] == ["text_completion"] * len(PROMPTS)
    assert [c["usage"]["prompt_tokens"] for c in completions] == prompt_token_counts
    # Greedy decoding: the v2 job answers every prompt exactly as the v1 job did.
    assert [c["choices"][0]["text"] for c in completions] == [r["text"] for r in results]


CHAT_FLOW = """
import json, time
from llmengine import Completion, CreateBatchCompletionsModelConfig
from llmengine.data_types.batch_completion import FilteredChatCompletionV2Request

questions = QUESTIONS
job = Completion.batch_create(
    output_data_path=OUTPUT,
    model_config=CreateBatchCompletionsModelConfig(model="smollm2-135m"),
    content=[
        FilteredChatCompletionV2Request(messages=[{"role": "user", "content": q}], max_tokens=6, temperature=0.0)
        for q in questions
    ],
    use_v2=True,
)
assert job.status == "queued", job
while (state := Completion.get_batch_completion(job.job_id)["job"])["status"] not in ("completed", "failed"):
    time.sleep(0.5)
print(json.dumps({"job": state}))
"""


def test_published_client_v2_chat_content(platform: Platform, tmp_path: Path) -> None:
    """v2 ``content`` as the published client's chat requests: one ``chat.completion`` per request, in order."""
    from transformers import AutoTokenizer

    from model_engine_server.inference.model_loading import resolve_model

    questions = ["Hi", "What colour is the sky on a clear day?", "Name three animals that live in the sea."]
    output = tmp_path / "chat.json"
    script = CHAT_FLOW.replace("QUESTIONS", repr(questions)).replace("OUTPUT", repr(output.as_uri()))
    job = platform.peer(script)["job"]
    assert isinstance(job, dict) and job["status"] == "completed", job
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m", MODEL_CACHE)))
    rendered = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    expected = [len(tokenizer(text, add_special_tokens=True)["input_ids"]) for text in rendered]
    answers = json.loads(output.read_text())
    assert [a["object"] for a in answers] == ["chat.completion"] * len(questions)
    assert all(a["id"].startswith("chatcmpl-") for a in answers)
    assert [a["usage"]["prompt_tokens"] for a in answers] == expected  # every request once, in order
    for answer in answers:
        (choice,) = answer["choices"]
        assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
        assert 1 <= answer["usage"]["completion_tokens"] <= 6


def _submit(platform: Platform, tmp_path: Path, prompts: list[str], max_new_tokens: int) -> str:
    body = {
        "output_data_path": (tmp_path / "out.json").as_uri(),
        "model_config": {"model": "smollm2-135m"},
        "content": {"prompts": prompts, "max_new_tokens": max_new_tokens, "temperature": 0.0},
    }
    response = platform.post("/v1/llm/batch-completions", body)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def test_cancel_stops_the_running_worker(platform: Platform, tmp_path: Path) -> None:
    job_id = _submit(platform, tmp_path, PROMPTS * 4, max_new_tokens=200)
    platform.wait_for(job_id, lambda j: j["status"] == "running")
    pid = platform.worker_pid(job_id)
    assert process_alive(pid, None)
    cancel = f"import json, llmengine; print(json.dumps(llmengine.Completion.cancel_batch_completion({job_id!r})))"
    assert platform.peer(cancel) == {"success": True}  # the published client's call
    job = platform.wait_for(job_id, lambda j: j["status"] != "running", timeout=60)
    assert job["status"] == "cancelled"
    assert not process_alive(pid, None)
    assert not (tmp_path / "out.json").exists()
    assert platform.post(f"/v2/batch-completions/{job_id}/actions/cancel", {}).json() == {"success": False}


def test_a_killed_worker_is_resumed_and_every_prompt_is_answered_once(
    platform: Platform, tmp_path: Path, prompt_token_counts: list[int]
) -> None:
    job_id = _submit(platform, tmp_path, PROMPTS, max_new_tokens=24)
    job = platform.wait_for(job_id, lambda j: j["progress"]["done"] >= CHUNK)  # type: ignore[index]
    assert job["progress"]["done"] < len(PROMPTS), "the job finished before it could be killed; give it more work"  # type: ignore[index]
    parts = platform.data_dir / "objects" / "jobs" / job_id / "parts"
    written_before = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    os.killpg(platform.worker_pid(job_id), signal.SIGKILL)

    job = platform.wait_for(job_id, lambda j: j["status"] != "running")
    assert job["status"] == "completed", job
    # The parts written before the kill were not redone ...
    assert {name: (parts / name).stat().st_mtime_ns for name in written_before} == written_before
    # ... and the output answers every prompt exactly once, in order.
    results = json.loads((tmp_path / "out.json").read_text())
    assert [r["num_prompt_tokens"] for r in results] == prompt_token_counts


def test_failures_say_why(platform: Platform, tmp_path: Path) -> None:
    slow = {
        "output_data_path": (tmp_path / "slow.json").as_uri(),
        "model_config": {"model": "smollm2-135m"},
        "content": {"prompts": PROMPTS, "max_new_tokens": 200, "temperature": 0.0},
        "max_runtime_sec": 8,
    }
    too_slow = platform.post("/v1/llm/batch-completions", slow).json()["job_id"]
    platform.wait_for(too_slow, lambda j: j["status"] == "running")
    pid = platform.worker_pid(too_slow)

    not_a_checkpoint = tmp_path / "empty-checkpoint"
    not_a_checkpoint.mkdir()
    body = {
        "output_data_path": (tmp_path / "out.json").as_uri(),
        "model_config": {"model": "my-model", "checkpoint_path": str(not_a_checkpoint)},
        "content": {"prompts": ["hi"], "max_new_tokens": 4, "temperature": 0.0},
    }
    missing_model = platform.post("/v1/llm/batch-completions", body).json()["job_id"]
    failed = platform.wait_for(missing_model, lambda j: j["status"] not in ("queued", "running"))
    assert failed["status"] == "failed"
    assert str(failed["status_reason"]).startswith("model not found:")
    assert "config.json" in str(failed["status_reason"])

    late = platform.wait_for(too_slow, lambda j: j["status"] not in ("queued", "running"))
    assert late["status"] == "failed"
    assert str(late["status_reason"]).startswith("runtime exceeded")
    assert not process_alive(pid, None)
    assert not (tmp_path / "slow.json").exists()
