"""``model-engine fine-tune-run``: the worker of a fine-tune job.

Like a batch worker it needs nothing but the job's workspace in object storage:

    job.json                 FineTuneWorkerSpec
    train.csv, validation.csv
    checkpoint/state.pt      the trainer's last checkpoint (uploaded as it is written; a restarted worker resumes)
    events.json              what the job's events route shows: loss per step, validation loss per epoch, notes
    result/adapter/*, result/merged/*   the LoRA adapter and the merged checkpoint, written last
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_engine_server.domain.fine_tuning import (
    MERGED_RESULT_DIR,
    FineTuneWorkerSpec,
    Hyperparameters,
    parse_training_csv,
)
from model_engine_server.domain.jobs import WorkerStatus
from model_engine_server.inference.model_loading import ModelLoadError, resolve_model
from model_engine_server.storage.locations import StorageConfig, build_object_store
from model_engine_server.storage.port import ObjectNotFoundError
from model_engine_server.storage.workspace import JobWorkspace

log = logging.getLogger(__name__)

EVENTS = "events.json"
CHECKPOINT_KEY = "checkpoint/state.pt"
ADAPTER_RESULT_DIR = "result/adapter"


class FineTuneJobError(Exception):
    """A failure the job's owner can act on; the message becomes the job's status reason."""


class WorkspaceObserver:
    """Reports a training run into the job's workspace."""

    def __init__(self, workspace: JobWorkspace, min_interval: float = 1.0) -> None:
        self._workspace = workspace
        self._min_interval = min_interval
        self._last_write = 0.0
        try:
            self._events: list[dict[str, Any]] = workspace.read_json(EVENTS)
        except ObjectNotFoundError:
            self._events = []

    def event(self, level: str, message: str) -> None:
        log.info("%s", message)
        self._events.append({"timestamp": datetime.now(UTC).isoformat(), "level": level, "message": message})
        if time.monotonic() - self._last_write >= self._min_interval or level != "info":
            self.flush()

    def flush(self) -> None:
        self._workspace.write_json(EVENTS, self._events)
        self._last_write = time.monotonic()

    def progress(self, step: int, total: int) -> None:
        self._workspace.report(0, WorkerStatus(step, total))

    def checkpoint(self, state_file: Path) -> None:
        with state_file.open("rb") as source:
            self._workspace.store.put_file(self._workspace.prefix + CHECKPOINT_KEY, source)
        self.flush()


def read_events(workspace: JobWorkspace) -> list[dict[str, Any]]:
    try:
        events: list[dict[str, Any]] = workspace.read_json(EVENTS)
    except ObjectNotFoundError:
        return []
    return events


def run_fine_tune(job_id: str, storage: StorageConfig, cache_dir: Path) -> None:
    """Train to the end (resuming from the workspace's checkpoint) and upload the result."""
    workspace = JobWorkspace(build_object_store(storage), job_id)
    spec = FineTuneWorkerSpec.from_json(workspace.read_json("job.json"))
    observer = WorkspaceObserver(workspace)
    try:
        base = resolve_model(spec.checkpoint_path or spec.base_model, cache_dir)
    except ModelLoadError as error:
        raise _give_up(workspace, observer, f"model not found: {error}") from None
    train = parse_training_csv(workspace.store.get(workspace.prefix + "train.csv").decode(), "training_file")
    validation = []
    if spec.has_validation:
        raw = workspace.store.get(workspace.prefix + "validation.csv").decode()
        validation = parse_training_csv(raw, "validation_file")
    # Imported here: torch and peft load in seconds, and only workers need them.
    from model_engine_server.training.lora import LoraTrainer, TrainingDataError

    with tempfile.TemporaryDirectory(prefix=f"{job_id}-") as scratch:
        out = Path(scratch)
        _restore_checkpoint(workspace, out)
        trainer = LoraTrainer(base, out, Hyperparameters.parse(spec.hyperparameters), observer)
        try:
            result = trainer.run(train, validation)
        except TrainingDataError as error:
            raise _give_up(workspace, observer, str(error)) from None
        _upload_dir(workspace, result.adapter_dir, ADAPTER_RESULT_DIR)
        _upload_dir(workspace, result.merged_dir, MERGED_RESULT_DIR)
    observer.event("info", f"fine-tuned model {spec.fine_tuned_model} is ready to deploy")
    observer.flush()


def _give_up(workspace: JobWorkspace, observer: WorkspaceObserver, reason: str) -> FineTuneJobError:
    """Say why in the events and in the worker's status (the job's ``status_reason`` on every orchestrator)."""
    observer.event("error", reason)
    workspace.report(0, WorkerStatus(0, 0, reason))
    return FineTuneJobError(reason)


def _restore_checkpoint(workspace: JobWorkspace, out: Path) -> None:
    try:
        state = workspace.store.get(workspace.prefix + CHECKPOINT_KEY)
    except ObjectNotFoundError:
        return
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.pt").write_bytes(state)


def _upload_dir(workspace: JobWorkspace, source: Path, prefix: str) -> None:
    # The merged config goes last: a reader that sees config.json sees every weight file already.
    files = sorted(source.rglob("*"), key=lambda path: (path.name == "config.json", str(path)))
    for path in files:
        if path.is_file():
            with path.open("rb") as handle:
                workspace.store.put_file(f"{workspace.prefix}{prefix}/{path.relative_to(source).as_posix()}", handle)


def result_files(workspace: JobWorkspace) -> dict[str, str]:
    """``{file name: object key}`` of the merged checkpoint, for downloads."""
    prefix = f"{workspace.prefix}{MERGED_RESULT_DIR}/"
    return {key.removeprefix(prefix): key for key in workspace.store.list(prefix)}
