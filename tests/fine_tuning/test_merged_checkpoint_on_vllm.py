"""A fine-tune's merged checkpoint is a standard Hugging Face checkpoint: real vLLM (the managed vLLM-CPU venv of
``make engines``) loads it as written and answers with what the fine-tune taught, at temperature 0."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from model_engine_server.config import Settings
from model_engine_server.domain.fine_tuning import Hyperparameters, TrainingExample
from model_engine_server.inference.model_loading import resolve_model
from model_engine_server.orchestration.local.engines import VLLM_CPU
from tests.fine_tuning.test_fine_tune_end_to_end import CODE_WORD, HYPERPARAMETERS, QUESTIONS
from tests.jobs.platform import MODEL_CACHE

pytestmark = [pytest.mark.model, pytest.mark.vllm]

GENERATE = """
import json, sys
from vllm import LLM, SamplingParams

def main() -> None:
    llm = LLM(model=sys.argv[1], dtype="float32", max_model_len=512, enforce_eager=True)
    prompt = llm.get_tokenizer().apply_chat_template(
        [{"role": "user", "content": sys.argv[2]}], add_generation_prompt=True, tokenize=False
    )
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12))
    with open(sys.argv[3], "w") as answer:  # not stdout: vLLM logs there until it exits
        json.dump({"text": out[0].outputs[0].text}, answer)

if __name__ == "__main__":  # vLLM's engine core starts in a spawned process
    main()
"""


class _Silent:
    def event(self, level: str, message: str) -> None:
        pass

    def progress(self, step: int, total: int) -> None:
        pass

    def checkpoint(self, state_file: Path) -> None:
        pass


@pytest.mark.timeout(1500)  # a short training run, then vLLM's start-up on 2 shared CPU cores
def test_vllm_serves_a_merged_fine_tune_as_written(tmp_path: Path) -> None:
    python = VLLM_CPU.python(Settings().engines_dir)
    if not VLLM_CPU.installed(Settings().engines_dir):
        pytest.skip("vLLM-CPU is not installed: run `make engines`")
    from model_engine_server.training.lora import LoraTrainer

    examples = [TrainingExample(q, f"The code word is {CODE_WORD}.", row) for row, q in enumerate(QUESTIONS, 2)]
    params = Hyperparameters(**HYPERPARAMETERS)  # type: ignore[arg-type]
    result = LoraTrainer(resolve_model("smollm2-135m", MODEL_CACHE), tmp_path, params, _Silent()).run(examples)

    script = tmp_path / "generate.py"
    script.write_text(GENERATE)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # vLLM's own venv, nothing of ours
    done = subprocess.run(
        [str(python), str(script), str(result.merged_dir), QUESTIONS[0], str(tmp_path / "answer.json")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads((tmp_path / "answer.json").read_text())["text"]
    assert CODE_WORD in answer, answer
