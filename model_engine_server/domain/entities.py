"""The records the platform is about: model endpoints (their requested shape and observed state), API keys and
async task records.

Plain dataclasses and enums; no I/O and no framework imports, so every layer can use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class EndpointStatus(StrEnum):
    """The only values the published client accepts."""

    UPDATE_PENDING = "UPDATE_PENDING"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    READY = "READY"
    UPDATE_FAILED = "UPDATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"


class InferenceFramework(StrEnum):
    TEXT_GENERATION_INFERENCE = "text_generation_inference"
    VLLM = "vllm"


class EndpointType(StrEnum):
    STREAMING = "streaming"
    SYNC = "sync"
    ASYNC = "async"


class ModelSource(StrEnum):
    HUGGING_FACE = "hugging_face"


@dataclass
class EndpointConfig:
    """What the operator asked for: everything a create or update request can set."""

    model_name: str
    source: ModelSource = ModelSource.HUGGING_FACE
    inference_framework: InferenceFramework = InferenceFramework.TEXT_GENERATION_INFERENCE
    inference_framework_image_tag: str = "latest"
    num_shards: int = 1
    quantize: str | None = None
    checkpoint_path: str | None = None
    endpoint_type: EndpointType = EndpointType.STREAMING
    cpus: str = "1"
    gpus: int = 0
    memory: str = "4Gi"
    gpu_type: str | None = None
    storage: str | None = None
    nodes_per_worker: int = 1
    min_workers: int = 1
    max_workers: int = 1
    per_worker: int = 10
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    public_inference: bool = False
    high_priority: bool = False
    post_inference_hooks: list[str] = field(default_factory=list)
    default_callback_url: str | None = None
    # A Jinja chat template replacing the tokenizer's for chat completions (applied per request by the engine).
    chat_template_override: str | None = None


@dataclass
class ObservedState:
    """What the orchestrator sees running for an endpoint."""

    status: EndpointStatus
    available_workers: int = 0
    unavailable_workers: int = 0
    reason: str | None = None
    # The servers' resources are absent, stale or were changed by hand: the reconciler should call apply() again
    # (status is UPDATE_IN_PROGRESS with a reason saying what is missing).
    missing: bool = False


@dataclass
class ModelEndpoint:
    id: str
    name: str
    owner: str
    created_by: str
    created_at: datetime
    last_updated_at: datetime
    config: EndpointConfig
    status: EndpointStatus = EndpointStatus.UPDATE_PENDING
    status_reason: str | None = None
    available_workers: int = 0
    unavailable_workers: int = 0
    # Bumped on every update, so orchestrators can tell which revision their servers run.
    revision: int = 1
    # The latest request any gateway reported for it (written at most every few seconds): scale to zero and back.
    last_request_at: datetime | None = None


class EndpointOrder(StrEnum):
    """How a list of endpoints is sorted (``?order_by=``)."""

    NEWEST = "newest"
    OLDEST = "oldest"
    ALPHABETICAL = "alphabetical"


@dataclass(frozen=True)
class ApiKey:
    """A stored API key: never the key itself (only its hash is stored), just what identifies it."""

    id: str
    owner: str
    prefix: str
    description: str
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    admin: bool = False  # may manage every tenant's keys and limits


@dataclass(frozen=True)
class KeyIdentity:
    """Who a valid (not revoked) key acts as; ``expires_at`` is checked by the caller at each use."""

    key_id: str
    owner: str
    admin: bool
    expires_at: datetime | None


@dataclass(frozen=True)
class AsyncTaskRecord:
    """Who submitted an async task, for which endpoint, and until when its result may be read."""

    id: str
    owner: str
    endpoint_id: str | None  # None once the endpoint's record is gone
    endpoint_name: str
    created_at: datetime
    expires_at: datetime
