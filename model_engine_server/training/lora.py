"""LoRA fine-tuning of a causal language model on prompt/response pairs, resumable from its last checkpoint.

The prompt is rendered with the model's own chat template (when it has one) and the loss is taken on the response
tokens only, so the model learns to answer, not to echo questions. Training state (adapter weights, optimizer, step)
is checkpointed atomically every ``checkpoint_steps`` steps and at each epoch's end; a run started again with the same
output directory continues from there and sees the same batches in the same order, because the data order is a
function of the seed and the epoch only.

The result is written twice: the LoRA adapter (``adapter/``) and the merged weights (``merged/``), a standard Hugging
Face checkpoint — config with ``architectures``, safetensors, tokenizer with its chat template, generation config —
that transformers, vLLM and TGI load as they are.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from model_engine_server.domain.fine_tuning import Hyperparameters, TrainingExample
from model_engine_server.inference.model_loading import write_standard_checkpoint


class TrainingObserver(Protocol):
    """Where a run reports: events for people, progress for the job's record, checkpoints for safe keeping."""

    def event(self, level: str, message: str) -> None: ...

    def progress(self, step: int, total: int) -> None: ...

    def checkpoint(self, state_file: Path) -> None: ...


CHECKPOINT_DIR = "checkpoint"
IGNORE_INDEX = -100  # label value the loss skips


class TrainingDataError(Exception):
    """An example cannot be used (e.g. longer than ``max_length``); the message names its row."""


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    merged_dir: Path
    final_train_loss: float
    validation_loss: float | None
    steps: int


def encode(tokenizer: PreTrainedTokenizerBase, example: TrainingExample, max_length: int) -> Encoded:
    """Token ids of prompt + response, with the prompt's positions masked out of the labels."""
    if tokenizer.chat_template:
        user = [{"role": "user", "content": example.prompt}]
        prompt_ids = _ids(tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True))
        full = user + [{"role": "assistant", "content": example.response}]
        input_ids = _ids(tokenizer.apply_chat_template(full, tokenize=True))
        if input_ids[: len(prompt_ids)] != prompt_ids:  # a template that rewrites earlier turns: mask nothing out
            prompt_ids = []
    else:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=True)["input_ids"]
        response_ids = tokenizer(example.response, add_special_tokens=False)["input_ids"]
        input_ids = [*prompt_ids, *response_ids, tokenizer.eos_token_id]
    if len(input_ids) > max_length:
        raise TrainingDataError(
            f"row {example.row} is {len(input_ids)} tokens long after the chat template; max_length is {max_length}."
        )
    labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
    return Encoded(input_ids=input_ids, labels=labels)


def _ids(rendered: Any) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True); older versions a list.
    ids = rendered["input_ids"] if not isinstance(rendered, list) else rendered
    return [int(token) for token in ids]


@dataclass(eq=False)
class LoraTrainer:
    base_checkpoint: Path
    output_dir: Path
    params: Hyperparameters
    observer: TrainingObserver
    checkpoint_steps: int = field(default=25, kw_only=True)
    _device: torch.device = field(
        default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"), init=False
    )

    def run(self, train: Sequence[TrainingExample], validation: Sequence[TrainingExample] = ()) -> TrainingResult:
        torch.manual_seed(self.params.seed)
        tokenizer = AutoTokenizer.from_pretrained(str(self.base_checkpoint))
        train_set = [encode(tokenizer, example, self.params.max_length) for example in train]
        validation_set = [encode(tokenizer, example, self.params.max_length) for example in validation]
        model = self._lora_model(tokenizer)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=self.params.lr,
            weight_decay=self.params.weight_decay,
        )
        steps_per_epoch = math.ceil(len(train_set) / self.params.batch_size)
        total_steps = steps_per_epoch * self.params.epochs
        step = self._resume(model, optimizer)
        loss_value = float("nan")
        validation_loss: float | None = None
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            batch = self._batch(train_set, epoch, index)
            loss_value = self._train_step(model, optimizer, batch, tokenizer.pad_token_id or 0)
            step += 1
            self.observer.event("info", f"step {step}/{total_steps} epoch {epoch + 1} train_loss {loss_value:.4f}")
            self.observer.progress(step, total_steps)
            epoch_done = step % steps_per_epoch == 0
            if validation_set and epoch_done:
                validation_loss = self._evaluate(model, validation_set, tokenizer.pad_token_id or 0)
                self.observer.event("info", f"epoch {epoch + 1} validation_loss {validation_loss:.4f}")
            if (epoch_done or step % self.checkpoint_steps == 0) and step < total_steps:
                self._save_checkpoint(model, optimizer, step)
        return self._write_result(model, tokenizer, loss_value, validation_loss, total_steps)

    def _lora_model(self, tokenizer: PreTrainedTokenizerBase) -> Any:
        dtype = torch.bfloat16 if self._device.type == "cuda" else torch.float32
        base: Any = AutoModelForCausalLM.from_pretrained(str(self.base_checkpoint), dtype=dtype)
        base.to(self._device)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        config = LoraConfig(
            r=self.params.lora_r,
            lora_alpha=self.params.lora_alpha,
            lora_dropout=self.params.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(base, config)

    def _batch(self, data: list[Encoded], epoch: int, index: int) -> list[Encoded]:
        order = list(range(len(data)))
        random.Random(self.params.seed * 1_000_003 + epoch).shuffle(order)  # same order after a resume
        size = self.params.batch_size
        return [data[i] for i in order[index * size : (index + 1) * size]]

    def _train_step(self, model: Any, optimizer: torch.optim.Optimizer, batch: list[Encoded], pad: int) -> float:
        model.train()
        input_ids, labels, mask = collate(batch, pad, self._device)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    @torch.no_grad()
    def _evaluate(self, model: Any, data: list[Encoded], pad: int) -> float:
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(data), self.params.batch_size):
            batch = data[start : start + self.params.batch_size]
            input_ids, labels, mask = collate(batch, pad, self._device)
            total += float(model(input_ids=input_ids, attention_mask=mask, labels=labels).loss) * len(batch)
            count += len(batch)
        return total / count

    def _resume(self, model: Any, optimizer: torch.optim.Optimizer) -> int:
        state_file = self.output_dir / CHECKPOINT_DIR / "state.pt"
        if not state_file.is_file():
            return 0
        state = torch.load(state_file, map_location=self._device, weights_only=True)
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        self.observer.event("info", f"resumed from the checkpoint at step {step}")
        return step

    def _save_checkpoint(self, model: Any, optimizer: torch.optim.Optimizer, step: int) -> None:
        state = {"adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(), "step": step}
        _atomic_dir(self.output_dir / CHECKPOINT_DIR, lambda staging: torch.save(state, staging / "state.pt"))
        self.observer.checkpoint(self.output_dir / CHECKPOINT_DIR / "state.pt")

    def _write_result(
        self, model: Any, tokenizer: PreTrainedTokenizerBase, loss: float, validation: float | None, steps: int
    ) -> TrainingResult:
        started = time.monotonic()
        adapter_dir, merged_dir = self.output_dir / "adapter", self.output_dir / "merged"
        _atomic_dir(adapter_dir, lambda staging: model.save_pretrained(str(staging)))
        merged = model.merge_and_unload()
        merged.to(torch.float32)

        def write_merged(staging: Path) -> None:
            write_standard_checkpoint(merged, tokenizer, staging)
            summary = {
                "base_checkpoint": str(self.base_checkpoint),
                "final_train_loss": loss,
                "validation_loss": validation,
            }
            (staging / "llm-engine-fine-tune.json").write_text(json.dumps(summary))

        _atomic_dir(merged_dir, write_merged)
        self.observer.event(
            "info", f"wrote the adapter and the merged checkpoint in {time.monotonic() - started:.1f} s"
        )
        return TrainingResult(adapter_dir, merged_dir, loss, validation, steps)


def collate(batch: list[Encoded], pad: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(item.input_ids) for item in batch)
    ids = [item.input_ids + [pad] * (width - len(item.input_ids)) for item in batch]
    labels = [item.labels + [IGNORE_INDEX] * (width - len(item.labels)) for item in batch]
    mask = [[1] * len(item.input_ids) + [0] * (width - len(item.input_ids)) for item in batch]
    return tuple(torch.tensor(rows, device=device) for rows in (ids, labels, mask))


def _atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Write a directory next to ``target`` and swap it in, so a crash never leaves a half-written one."""
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write(staging)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)
