"""Shared helpers for the orchestration tests: endpoints, the controllable fake server, and polling."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from model_engine_server.config import Settings
from model_engine_server.domain.entities import EndpointConfig, ModelEndpoint
from model_engine_server.orchestration.local import SupervisionPolicy
from model_engine_server.testing import eventually_async

# The test kit's TGI server; its --model-id may name a JSON control file (see model_engine_server/testing/tgi).
FAKE_SERVER_COMMAND = f"{sys.executable} -m model_engine_server.testing.tgi"

FAST_POLICY = SupervisionPolicy(
    health_interval_seconds=0.1,
    startup_probe_seconds=0.1,
    ready_health_interval_seconds=0.2,
    health_timeout_seconds=2.0,
    restart_backoff_initial_seconds=0.2,
    restart_backoff_max_seconds=0.8,
    crash_loop_after=3,
    stable_after_seconds=60.0,
    stop_grace_seconds=1.0,
)

T = TypeVar("T")


def fake_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=data_dir, inference_server_command=FAKE_SERVER_COMMAND, **overrides)


def control_file(directory: Path, name: str = "model", **behaviour: Any) -> Path:
    """A fake model: the JSON file the fake server reads at start-up (see model_engine_server/testing/tgi)."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps(behaviour))
    return path


def make_endpoint(name: str, checkpoint: Path | str | None, *, revision: int = 1, **config: Any) -> ModelEndpoint:
    now = datetime.now(UTC)
    return ModelEndpoint(
        id=str(uuid.uuid4()),
        name=name,
        owner="team-a",
        created_by="team-a",
        created_at=now,
        last_updated_at=now,
        config=EndpointConfig(
            model_name="smollm2-135m", checkpoint_path=None if checkpoint is None else str(checkpoint), **config
        ),
        revision=revision,
    )


async def eventually(probe: Callable[[], Awaitable[T] | T], accept: Callable[[T], bool], timeout: float = 20.0) -> T:
    """Poll ``probe`` (sync or async) until ``accept`` holds; fail with the last result after ``timeout``."""
    return await eventually_async(probe, accept, timeout=timeout, interval=0.05)
