"""``model-engine batch-run``: one worker of a batch-completion job, with the built-in engine in-process.

The worker reads its job from the workspace, skips the parts already written (a restarted job resumes), submits the
rest of its prompts to the engine's continuous-batching scheduler at once, and writes each part atomically as soon as
all of its prompts are done. The worker that finds every part present assembles the output file (atomically too).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model_engine_server.domain.batch import BatchItem, BatchWorkerSpec, OutputFormat, chunk_ranges, worker_ranges
from model_engine_server.domain.jobs import WorkerStatus
from model_engine_server.storage.locations import StorageConfig, build_object_store, open_location
from model_engine_server.storage.workspace import JobWorkspace

if TYPE_CHECKING:
    from pathlib import Path

    from model_engine_server.inference.server.events import Finished
    from model_engine_server.inference.server.service import InferenceService
    from model_engine_server.inference.server.validation import ValidRequest

log = logging.getLogger(__name__)


class BatchJobError(Exception):
    """A failure the job's owner can act on; the message becomes the job's status reason."""


@dataclass
class _Progress:
    done: int
    total: int
    phase: str = "loading"

    def status(self, error: str | None = None) -> WorkerStatus:
        return WorkerStatus(self.done, self.total, error, self.phase)


def run_worker(job_id: str, index: int, storage: StorageConfig, cache_dir: Path) -> None:
    """Run worker ``index`` of the job to the end; ``BatchJobError`` (reported in the workspace) when it cannot."""
    workspace = JobWorkspace(build_object_store(storage), job_id)
    spec = BatchWorkerSpec.model_validate(workspace.read_json("job.json"))
    mine = worker_ranges(spec.total, spec.chunk_size, spec.workers, index)
    written = workspace.finished_parts()
    todo = [part for part in mine if part not in written]
    progress = _Progress(
        sum(end - start for start, end in mine if (start, end) in written), sum(e - s for s, e in mine)
    )
    workspace.report(index, progress.status())
    try:
        if todo:
            log.info(
                "Worker %d: %d of %d prompts left in %d parts",
                index,
                progress.total - progress.done,
                progress.total,
                len(todo),
            )
            items = [BatchItem.model_validate(raw) for raw in workspace.read_json("input.json")]
            service = _load(spec, cache_dir)
            progress.phase = "generating"
            workspace.report(index, progress.status())
            asyncio.run(_generate(service, spec, items, todo, workspace, index, progress))
        _assemble_if_complete(workspace, spec, storage)
        progress.phase = "done"
        workspace.report(index, progress.status())
    except BatchJobError as error:
        workspace.report(index, progress.status(str(error)))
        raise


def _load(spec: BatchWorkerSpec, cache_dir: Path) -> InferenceService:
    from model_engine_server.config import Settings
    from model_engine_server.inference.model_loading import ModelLoadError
    from model_engine_server.inference.server.cli import build_service
    from model_engine_server.inference.server.speculation import DEFAULT_SPECULATE

    try:
        return build_service(
            model_id=spec.checkpoint_path or spec.model,
            cache_dir=cache_dir,
            max_input_tokens=None,
            max_total_tokens=spec.max_context_length,
            max_concurrent_requests=spec.total + 1,  # the whole shard queues at once; the token budget admits
            max_batch_total_tokens=None,
            max_batch_prefill_tokens=4096,
            max_batch_size=None,
            max_stop_sequences=16,
            waiting_served_ratio=1.2,
            max_waiting_tokens=8,
            prefix_cache_mb=Settings().prefix_cache_mb,  # prompts of a batch often share a template
            speculate=DEFAULT_SPECULATE,  # pays off as a shard's last sequence decodes alone
            dtype="auto",
            device=None,
            num_threads=None,
        )
    except ModelLoadError as error:
        raise BatchJobError(f"model not found: {error}") from error
    except MemoryError as error:
        raise BatchJobError(f"out of memory while loading the model {spec.model!r}") from error


async def _generate(
    service: InferenceService,
    spec: BatchWorkerSpec,
    items: list[BatchItem],
    parts: list[tuple[int, int]],
    workspace: JobWorkspace,
    index: int,
    progress: _Progress,
) -> None:
    valid = {i: _validate(service, items[i], i) for start, end in parts for i in range(start, end)}
    window = asyncio.Semaphore(max(1, spec.max_in_flight // spec.chunk_size))  # parts in the engine at once
    service.scheduler.start()
    try:

        async def finish(i: int) -> dict[str, Any]:
            event = await service.submit(valid[i], stream=False).result(_never_disconnected)
            from model_engine_server.inference.server.events import ErrorEvent

            if isinstance(event, ErrorEvent):
                raise BatchJobError(f"prompt {i}: {event.message}")
            assert event.finished is not None
            return _format(spec, items[i], len(valid[i].prompt_ids), event.finished)

        async def write(start: int, end: int) -> None:
            async with window:
                results = await asyncio.gather(*(finish(i) for i in range(start, end)))
            await asyncio.to_thread(workspace.write_part, start, end, list(results))
            progress.done += end - start
            await asyncio.to_thread(workspace.report, index, progress.status())

        await asyncio.gather(*(write(start, end) for start, end in parts))
    except MemoryError as error:
        raise BatchJobError("out of memory while generating; lower data_parallelism or max_new_tokens") from error
    finally:
        await asyncio.to_thread(service.scheduler.stop)


async def _never_disconnected() -> bool:
    return False


def _validate(service: InferenceService, item: BatchItem, row: int) -> ValidRequest:
    from model_engine_server.inference.server.validation import GenerationRequestError

    prompt = item.prompt if item.messages is None else service.apply_chat_template(item.messages)
    try:
        sampling = service.validator.sampling(
            seed=item.seed,
            do_sample=item.temperature > 0,
            temperature=item.temperature or None,
            top_k=item.top_k if item.top_k and item.top_k > 0 else None,
            top_p=item.top_p if item.top_p is not None and item.top_p < 1.0 else None,
            frequency_penalty=item.frequency_penalty,
            presence_penalty=item.presence_penalty,
        )
        return service.validator.validate(
            prompt or "", max_new_tokens=item.max_new_tokens, sampling=sampling, stop=item.stop
        )
    except GenerationRequestError as error:
        raise BatchJobError(f"bad input row {row}: {error.message}") from error


def _format(spec: BatchWorkerSpec, item: BatchItem, prompt_tokens: int, finished: Finished) -> dict[str, Any]:
    completion_tokens = len(finished.tokens)
    if spec.output_format is OutputFormat.V1:
        output: dict[str, Any] = {
            "text": finished.generated_text,
            "num_prompt_tokens": prompt_tokens,
            "num_completion_tokens": completion_tokens,
        }
        if item.return_token_log_probs:
            output["tokens"] = [{"token": t.text, "log_prob": t.logprob} for t in finished.tokens]
        return output
    reason = "length" if finished.reason == "length" else "stop"
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    prefix = "chatcmpl" if spec.output_format is OutputFormat.CHAT else "cmpl"  # OpenAI's id prefixes
    common = {"id": f"{prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": spec.model, "usage": usage}
    if spec.output_format is OutputFormat.CHAT:
        message = {"role": "assistant", "content": finished.generated_text}
        return {
            **common,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": reason}],
        }
    return {
        **common,
        "object": "text_completion",
        "choices": [{"index": 0, "text": finished.generated_text, "finish_reason": reason, "logprobs": None}],
    }


def _assemble_if_complete(workspace: JobWorkspace, spec: BatchWorkerSpec, storage: StorageConfig) -> None:
    """Write the output file once every part exists. Any worker may do it; the result is the same bytes."""
    ranges = chunk_ranges(spec.total, spec.chunk_size)
    if not set(ranges) <= workspace.finished_parts():
        return
    results: list[Any] = []
    for start, end in ranges:
        results.extend(workspace.read_part(start, end))
    store, key = open_location(spec.output_data_path, storage)
    store.put(key, json.dumps(results).encode())
    log.info("Wrote %d results to %s", len(results), spec.output_data_path)
