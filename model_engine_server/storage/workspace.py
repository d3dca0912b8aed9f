"""A job's workspace in object storage (``jobs/<job_id>/``): how the gateway, workers and the reconciler meet.

    job.json              what the workers run (written once at submit)
    input.json            the job's input, normalized (batch completions)
    parts/<start>-<end>   finished results of prompts [start, end), each written atomically (the unit of resumption)
    workers/<index>.json  each worker's progress, and its error when it gave up

Workers need nothing but this (no registry access), so the same code runs as a local process and as a pod.
"""

from __future__ import annotations

import json
from typing import Any

from model_engine_server.domain.jobs import WorkerStatus
from model_engine_server.storage.port import ObjectNotFoundError, ObjectStore


class JobWorkspace:
    def __init__(self, store: ObjectStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.prefix = f"jobs/{job_id}/"

    def write_json(self, name: str, value: Any) -> None:
        self.store.put(self.prefix + name, json.dumps(value, separators=(",", ":")).encode())

    def read_json(self, name: str) -> Any:
        return json.loads(self.store.get(self.prefix + name))

    # --- result parts ---------------------------------------------------------------------------------------------

    @staticmethod
    def part_name(start: int, end: int) -> str:
        return f"parts/{start:09d}-{end:09d}.json"

    def write_part(self, start: int, end: int, results: list[Any]) -> None:
        self.write_json(self.part_name(start, end), results)

    def finished_parts(self) -> set[tuple[int, int]]:
        parts = set()
        for key in self.store.list(self.prefix + "parts/"):
            stem = key.rsplit("/", 1)[-1].removesuffix(".json")
            start, _, end = stem.partition("-")
            if start.isdigit() and end.isdigit():
                parts.add((int(start), int(end)))
        return parts

    def read_part(self, start: int, end: int) -> list[Any]:
        results: list[Any] = self.read_json(self.part_name(start, end))
        return results

    # --- worker status --------------------------------------------------------------------------------------------

    def report(self, index: int, status: WorkerStatus) -> None:
        self.write_json(
            f"workers/{index}.json",
            {"done": status.done, "total": status.total, "error": status.error, "phase": status.phase},
        )

    def worker_statuses(self) -> list[WorkerStatus]:
        statuses = []
        for key in self.store.list(self.prefix + "workers/"):
            try:
                raw = json.loads(self.store.get(key))
            except (ObjectNotFoundError, ValueError):
                continue  # removed or rewritten meanwhile: the next look sees it
            statuses.append(WorkerStatus(int(raw["done"]), int(raw["total"]), raw.get("error"), raw.get("phase", "")))
        return statuses
