"""The local orchestrator's memory across platform restarts: which processes serve which endpoint, on which port.

A platform that is killed (not stopped) leaves its replicas running; on the next start they are re-adopted from this
file instead of being started twice. The file is rewritten atomically after every change.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class ReplicaRecord:
    slot: int
    pid: int
    port: int
    start_time: int | None
    launch_key: str
    log_path: str
    log_offset: int
    ready: bool = False  # answering /health at the last write


@dataclass
class DeploymentRecord:
    endpoint_id: str
    name: str
    revision: int
    launch_key: str
    desired_replicas: int
    replicas: list[ReplicaRecord] = field(default_factory=list)


class StateFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_written: str | None = None

    def load(self) -> list[DeploymentRecord]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable local orchestrator state %s: %s", self.path, exc)
            return []
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            return []
        return [_deployment_from_json(item) for item in raw.get("deployments", [])]

    def save(self, deployments: list[DeploymentRecord]) -> None:
        text = json.dumps({"version": STATE_VERSION, "deployments": [asdict(d) for d in deployments]}, indent=1)
        if text == self._last_written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        self._last_written = text

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._last_written = None


def _deployment_from_json(item: dict[str, Any]) -> DeploymentRecord:
    replicas = [ReplicaRecord(**r) for r in item.get("replicas", [])]
    return DeploymentRecord(
        endpoint_id=item["endpoint_id"],
        name=item["name"],
        revision=item["revision"],
        launch_key=item["launch_key"],
        desired_replicas=item["desired_replicas"],
        replicas=replicas,
    )
