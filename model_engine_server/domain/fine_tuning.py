"""Fine-tuning rules: what a training file and a set of hyperparameters must look like. No I/O here.

Training files are CSV with a header naming the columns ``prompt,response`` (llm-engine's format) or ``input,output``.
Every problem is reported with the 1-based row number a spreadsheet shows (the header is row 1), so the person who
wrote the file can find it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from model_engine_server.domain.exceptions import InvalidRequestError

COLUMN_PAIRS = (("prompt", "response"), ("input", "output"))
MAX_SUFFIX_LENGTH = 28
_SUFFIX_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@dataclass(frozen=True)
class TrainingExample:
    prompt: str
    response: str
    row: int  # the row number in the file (header = 1)


@dataclass(frozen=True)
class Hyperparameters:
    """LoRA fine-tuning settings; the defaults suit small data sets on small models."""

    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_length: int = 512
    weight_decay: float = 0.0
    seed: int = 0

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Hyperparameters:
        """Build from a request's ``hyperparameters`` dict: unknown keys and bad values are a 400 naming them."""
        raw = dict(raw or {})
        known = {field.name: field for field in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise InvalidRequestError(
                f"Unknown hyperparameters: {', '.join(unknown)}; supported: {', '.join(sorted(known))}."
            )
        values = {name: _coerce(name, value, known[name].type) for name, value in raw.items()}
        params = cls(**values)
        params._check_ranges()
        return params

    def _check_ranges(self) -> None:
        checks = (
            ("lr", 0 < self.lr <= 1, "must be in (0, 1]"),
            ("epochs", 1 <= self.epochs <= 100, "must be between 1 and 100"),
            ("batch_size", 1 <= self.batch_size <= 1024, "must be between 1 and 1024"),
            ("lora_r", 1 <= self.lora_r <= 256, "must be between 1 and 256"),
            ("lora_alpha", 1 <= self.lora_alpha <= 1024, "must be between 1 and 1024"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("max_length", 16 <= self.max_length <= 131072, "must be between 16 and 131072"),
            ("weight_decay", 0 <= self.weight_decay < 1, "must be in [0, 1)"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise InvalidRequestError(f"hyperparameters.{name} {rule} (got {getattr(self, name)!r}).")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = {"float": float, "int": int}[str(annotation)]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequestError(f"hyperparameters.{name} must be a number (got {value!r}).")
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequestError(f"hyperparameters.{name} must be a number (got {value!r}).") from None
    if kind is int:
        if not number.is_integer():
            raise InvalidRequestError(f"hyperparameters.{name} must be a whole number (got {value!r}).")
        return int(number)
    return number


def parse_training_csv(text: str, what: str = "training_file") -> list[TrainingExample]:
    """The examples in a CSV file; raises a 400 naming the row for anything a trainer could not use."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise InvalidRequestError(f"{what} is empty: it needs a header row (prompt,response) and examples.") from None
    except csv.Error as error:
        raise InvalidRequestError(f"{what} is not valid CSV: {error}.") from None
    columns = _columns(header, what)
    examples: list[TrainingExample] = []
    try:
        for row_number, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank lines, e.g. a trailing newline in an editor
            examples.append(_example(row, columns, row_number, what))
    except csv.Error as error:
        raise InvalidRequestError(f"{what} is not valid CSV near row {reader.line_num}: {error}.") from None
    if not examples:
        raise InvalidRequestError(f"{what} has a header but no examples.")
    return examples


def _columns(header: list[str], what: str) -> tuple[int, int]:
    for prompt_column, response_column in COLUMN_PAIRS:
        if prompt_column in header and response_column in header:
            return header.index(prompt_column), header.index(response_column)
    raise InvalidRequestError(
        f"{what} must have the columns prompt,response (or input,output); its header is {','.join(header)!r}."
    )


def _example(row: list[str], columns: tuple[int, int], row_number: int, what: str) -> TrainingExample:
    prompt_index, response_index = columns
    if len(row) <= max(columns):
        raise InvalidRequestError(f"{what} row {row_number} has {len(row)} columns; the header names more.")
    prompt, response = row[prompt_index], row[response_index]
    if not prompt.strip():
        raise InvalidRequestError(f"{what} row {row_number} has an empty prompt.")
    if not response.strip():
        raise InvalidRequestError(f"{what} row {row_number} has an empty response.")
    return TrainingExample(prompt=prompt, response=response, row=row_number)


def check_lengths(
    examples: list[TrainingExample], max_length: int, context_length: int, model: str, what: str = "training_file"
) -> None:
    """400 naming the first row that cannot fit ``max_length`` (itself at most the model's context length).

    The gateway has no tokenizer, so it counts what is certain (as completions do): every whitespace-separated word
    is at least one token. A row that passes may still be a few tokens too long once the chat template is applied;
    the trainer counts exactly and fails the job within seconds, naming the row.
    """
    if max_length > context_length:
        raise InvalidRequestError(
            f"hyperparameters.max_length ({max_length}) exceeds the context length of {model} "
            f"({context_length} tokens)."
        )
    for example in examples:
        at_least = len(example.prompt.split()) + len(example.response.split())
        if at_least > max_length:
            raise InvalidRequestError(
                f"{what} row {example.row} is longer than the model can train on: at least {at_least} tokens "
                f"(prompt and response), but max_length is {max_length} (context length of {model}: "
                f"{context_length}). Shorten the row or raise hyperparameters.max_length."
            )


def check_suffix(suffix: str | None) -> None:
    if suffix is None:
        return
    if len(suffix) > MAX_SUFFIX_LENGTH or not _SUFFIX_PATTERN.match(suffix):
        raise InvalidRequestError(
            f"suffix must be at most {MAX_SUFFIX_LENGTH} characters of lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit (got {suffix!r})."
        )


def fine_tuned_model_name(base_model: str, suffix: str | None, created_at: datetime) -> str:
    """``<model>.<suffix>.<timestamp>``: unique per second and safe as a Kubernetes label value (≤ 63 characters)."""
    stamp = created_at.strftime("%y%m%d-%H%M%S")
    base = re.sub(r"[^a-z0-9-]+", "-", base_model.lower()).strip("-")
    parts = [base[: 63 - len(stamp) - (len(suffix) + 1 if suffix else 0) - 1], *([suffix] if suffix else []), stamp]
    return ".".join(parts)


@dataclass(frozen=True)
class FineTuneWorkerSpec:
    """What a fine-tune worker runs (the workspace's ``job.json``)."""

    base_model: str  # a model-zoo name, or the name shown for ``checkpoint_path``
    checkpoint_path: str | None
    fine_tuned_model: str
    hyperparameters: dict[str, Any]
    has_validation: bool

    def to_json(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FineTuneWorkerSpec:
        return cls(**{field.name: raw[field.name] for field in fields(cls)})


MERGED_RESULT_DIR = "result/merged"  # inside the job's workspace: the checkpoint endpoints serve


@dataclass(frozen=True)
class FineTunedModel:
    """A fine-tune's result as a model its owner can deploy: ``Model.create(model=name)``."""

    name: str
    owner: str
    base_model: str
    checkpoint_path: str  # a local directory, or an s3:// prefix
    job_id: str
