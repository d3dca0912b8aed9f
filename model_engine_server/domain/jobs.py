"""Jobs: work that runs a model over a data set and ends (batch completions, fine-tunes).

A job is a registry record (who, what kind, the spec, status, progress) that the reconciler turns into running
workers through the orchestrator's ``JobRunner`` (a supervised process on one machine, a ``batch/v1`` Job on
Kubernetes). Workers find everything they need in the job's workspace in object storage (``storage.workspace``), so
they never talk to the registry; the reconciler reads their progress from there.

A new kind of job plugs in with: a ``JobKind`` value, a ``model-engine <entrypoint>`` command in
``JOB_ENTRYPOINTS`` that runs one worker (index in ``JOB_COMPLETION_INDEX``), and a route that validates the request,
writes the workspace and records the job with ``JobRegistry.create``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobKind(StrEnum):
    BATCH_COMPLETION = "batch_completion"
    FINE_TUNE = "fine_tune"


# `model-engine <entrypoint> --job-id <id>` runs one worker of a job of that kind.
JOB_ENTRYPOINTS: dict[JobKind, str] = {JobKind.BATCH_COMPLETION: "batch-run", JobKind.FINE_TUNE: "fine-tune-run"}
# A worker that gives up on purpose (bad input, model not found) exits with this code after reporting why; running
# it again would not help, so neither a local supervisor nor a Kubernetes Job retries it.
EXIT_JOB_ERROR = 2


class JobStatus(StrEnum):
    """llm-engine's batch statuses; other kinds map them to their own words at the API."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class RunState(StrEnum):
    """What the orchestrator sees of a job's workers."""

    PENDING = "pending"  # accepted, not running yet (pods scheduling)
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every worker exited successfully
    FAILED = "failed"  # gave up (deadline, restarts exhausted); ``reason`` says why
    CRASHED = "crashed"  # a worker died; the reconciler restarts it (resuming) while restarts remain
    MISSING = "missing"  # nothing runs for the job (e.g. the control plane restarted)


@dataclass(frozen=True)
class RunObservation:
    state: RunState
    reason: str | None = None


@dataclass(frozen=True)
class JobResources:
    cpus: str = "2"
    gpus: int = 0
    memory: str = "8Gi"
    gpu_type: str | None = None
    storage: str | None = None


@dataclass
class Job:
    id: str
    kind: JobKind
    owner: str
    spec: dict[str, Any]  # the request as accepted, for reading back (model_config, paths, labels...)
    status: JobStatus
    created_at: datetime
    expires_at: datetime
    parallelism: int = 1  # workers sharing the data set
    max_runtime_sec: int = 24 * 3600
    resources: JobResources = field(default_factory=JobResources)
    image: str | None = None  # container image on Kubernetes; None: the orchestrator's default for the kind
    priority: str | None = None
    status_reason: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    cancel_requested: bool = False
    restarts: int = 0  # times the workers were restarted after a crash (each resumes where the last stopped)
    result: dict[str, str] = field(default_factory=dict)  # e.g. output_file_id, fine_tuned_model


@dataclass(frozen=True)
class JobEvent:
    timestamp: datetime
    level: str  # info | warning | error
    message: str


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker reports in the workspace: its progress, and why it gave up if it did."""

    done: int
    total: int
    error: str | None = None
    phase: str = ""  # what the worker is doing: loading | generating | done (free text per kind)
