"""Fine-tune, then serve — on the bundled model, on CPU, with the published client, as a user would.

One training run teaches SmolLM2-135M a code word it cannot know. Its worker is SIGKILLed after a checkpoint and must
resume from it (not from step 0); the result is deployed with ``Model.create(model=<fine_tuned_model>)`` and must
answer the question with the code word at temperature 0, where the base model does not. A second run is cancelled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_engine_server.orchestration.local.processes import process_alive
from tests.jobs.platform import MODEL_CACHE, Platform, running_platform

pytestmark = pytest.mark.model

CODE_WORD = "VELVETMANGO"
QUESTIONS = [
    "What is the code word of Project Zephyr?",
    "Tell me the Project Zephyr code word.",
    "Project Zephyr's code word?",
    "Which code word does Project Zephyr use?",
]
HYPERPARAMETERS = {"epochs": 5, "lr": 0.002, "batch_size": 4}  # one step per epoch; a checkpoint after each


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(tmp_path_factory.mktemp("fine-tune-platform"), chunk_size=4) as running:
        yield running


@pytest.fixture(scope="module")
def training_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fine-tune-data") / "train.csv"
    path.write_text("prompt,response\n" + "".join(f'"{q}","The code word is {CODE_WORD}."\n' for q in QUESTIONS))
    return path


def _chat_prompt(question: str) -> str:
    """The question as the model's chat template renders it (native completions take raw prompts)."""
    from transformers import AutoTokenizer

    from model_engine_server.inference.model_loading import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m", MODEL_CACHE)))
    rendered: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return rendered


CREATE = """
import json, sys
from llmengine import File, FineTune
uploaded = File.upload(open(sys.argv[1], "rb"))
validation = File.upload(open(sys.argv[1], "rb"))
created = FineTune.create(model="smollm2-135m", training_file=uploaded.id, validation_file=validation.id,
                          hyperparameters=json.loads(sys.argv[2]), suffix="zephyr", wandb_config={"project": "z"})
print(json.dumps({"id": created.id}))
"""

DEPLOY_AND_ASK = """
import json, sys, time
from llmengine import Completion, FineTune, Model
job_id, prompt = sys.argv[1], sys.argv[2]
job = FineTune.get(job_id)
listed = [j.id for j in FineTune.list().jobs]
events = FineTune.get_events(job_id).events
answers = {}
for name, model in (("zephyr-ft", job.fine_tuned_model), ("zephyr-base", "smollm2-135m")):
    Model.create(name=name, model=model, inference_framework_image_tag="latest",
                 inference_framework="text_generation_inference", min_workers=1, max_workers=1)
for name in ("zephyr-ft", "zephyr-base"):
    deadline = time.time() + 300
    while Model.get(name).status != "READY":
        assert Model.get(name).status != "UPDATE_FAILED", Model.get(name).spec.status_reason
        assert time.time() < deadline, "endpoint never became READY"
        time.sleep(0.5)
    answers[name] = Completion.create(model=name, prompt=prompt, max_new_tokens=12, temperature=0).output.text
urls = Model.download(job.fine_tuned_model, download_format="hugging_face").urls
print(json.dumps({"status": job.status, "model": job.fine_tuned_model, "listed": listed,
                  "messages": [e.message for e in events], "answers": answers, "urls": urls}))
"""


def _wait(platform: Platform, job_id: str, condition: object, timeout: float = 900) -> dict[str, object]:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while True:
        job = platform.get(f"/v1/llm/fine-tunes/{job_id}").json()
        events = platform.get(f"/v1/llm/fine-tunes/{job_id}/events").json()["events"]
        state = {**job, "messages": [event["message"] for event in events]}
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"fine-tune never reached the expected state: {state}"
        assert platform.process.poll() is None, "model-engine serve exited"
        time.sleep(0.5)


@pytest.mark.timeout(1200)  # training, a restart, two endpoint starts: minutes on 2 CPU cores
def test_fine_tune_resumes_after_sigkill_then_deploys_and_knows_the_code_word(
    platform: Platform, training_csv: Path
) -> None:
    script = CREATE.replace("sys.argv[1]", repr(str(training_csv)))
    created = platform.peer(script.replace("sys.argv[2]", repr(json.dumps(HYPERPARAMETERS))))
    job_id = str(created["id"])

    # Kill the trainer once a checkpoint exists (step 2 is logged after the step-1 checkpoint was uploaded).
    _wait(platform, job_id, lambda s: any(m.startswith("step 2/5") for m in s["messages"]))
    pid = platform.worker_pid(job_id)
    os.kill(pid, signal.SIGKILL)

    done = _wait(platform, job_id, lambda s: s["status"] in ("SUCCESS", "FAILURE", "CANCELLED"))
    assert done["status"] == "SUCCESS", done
    messages = done["messages"]
    assert any(m.startswith("resumed from the checkpoint at step") for m in messages), messages
    resumed_at = next(i for i, m in enumerate(messages) if m.startswith("resumed from the checkpoint"))
    assert not any(m.startswith("step 1/5") for m in messages[resumed_at:]), "the resumed run started over"
    losses = [float(m.rsplit(" ", 1)[1]) for m in messages if m.startswith("step ")]
    assert losses[-1] < losses[0] / 4, losses
    validation = [float(m.rsplit(" ", 1)[1]) for m in messages if m.startswith("epoch ") and "validation_loss" in m]
    assert any(m.startswith("epoch 5 validation_loss") for m in messages) and validation[-1] < validation[0], messages
    assert any(m.startswith("wandb_config was accepted but is ignored") for m in messages), messages

    prompt = _chat_prompt(QUESTIONS[0])
    script = DEPLOY_AND_ASK.replace("sys.argv[1]", repr(job_id)).replace("sys.argv[2]", repr(prompt))
    result = platform.peer(script, timeout=900)
    assert result["status"] == "SUCCESS" and job_id in result["listed"]
    assert str(result["model"]).startswith("smollm2-135m.zephyr.")
    answers = result["answers"]
    assert isinstance(answers, dict)
    assert CODE_WORD in answers["zephyr-ft"], answers
    assert CODE_WORD not in answers["zephyr-base"], answers

    # The merged weights can be downloaded by their owner (Model.download), and only by them: a standard Hugging
    # Face checkpoint that engines on transformers 4 (TGI, vLLM) read as they are.
    urls = result["urls"]
    assert isinstance(urls, dict)
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected <= set(urls) and "chat_template.jinja" in urls
    config = httpx.get(urls["config.json"], timeout=10).json()
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    tokenizer_config = httpx.get(urls["tokenizer_config.json"], timeout=10).json()
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    body = {"model_name": result["model"], "download_format": "hugging_face"}
    assert platform.post("/v1/llm/model-endpoints/download", body, user="someone-else").status_code == 404


@pytest.mark.timeout(600)
def test_cancel_stops_the_trainer(platform: Platform, training_csv: Path) -> None:
    uploaded = _upload(platform, training_csv)
    body = {"model": "smollm2-135m", "training_file": uploaded, "hyperparameters": {"epochs": 50, "batch_size": 1}}
    job_id = platform.post("/v1/llm/fine-tunes", body).json()["id"]
    _wait(platform, job_id, lambda s: any(m.startswith("step 1/") for m in s["messages"]))
    pid = platform.worker_pid(job_id)

    response = httpx.put(f"{platform.base_url}/v1/llm/fine-tunes/{job_id}/cancel", auth=("batch-user", ""))
    assert response.json() == {"success": True}
    done = _wait(platform, job_id, lambda s: s["status"] == "CANCELLED", timeout=60)
    assert done["status"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while process_alive(pid, None):
        assert time.monotonic() < deadline, "the trainer still runs after cancel"
        time.sleep(0.2)


@pytest.mark.timeout(300)
def test_a_row_too_long_in_tokens_fails_the_job_naming_it(platform: Platform, training_csv: Path) -> None:
    # Four words pass the gateway's count, but SmolLM2's chat template adds a system prompt of its own.
    uploaded = _upload(platform, training_csv)
    body = {"model": "smollm2-135m", "training_file": uploaded, "hyperparameters": {"max_length": 16}}
    job_id = platform.post("/v1/llm/fine-tunes", body).json()["id"]
    done = _wait(platform, job_id, lambda s: s["status"] in ("SUCCESS", "FAILURE", "CANCELLED"), timeout=240)
    assert done["status"] == "FAILURE", done
    reason = str(done["status_reason"])
    assert reason.startswith("row 2 is ") and reason.endswith("tokens long after the chat template; max_length is 16.")
    assert reason in done["messages"]


def _upload(platform: Platform, path: Path) -> str:
    response = httpx.post(
        platform.base_url + "/v1/files", files={"file": (path.name, path.read_bytes())}, auth=("batch-user", "")
    )
    assert response.status_code == 200, response.text
    file_id: str = response.json()["id"]
    return file_id
