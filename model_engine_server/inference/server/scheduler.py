"""Continuous batching: one thread that owns the model and loops over admit → prefill → decode → retire.

HTTP handlers ``submit`` a ``GenerationRequest`` and read events from their sink; the scheduler thread pushes events
(one per token when streaming, and a final one) back to the event loop with ``call_soon_threadsafe``. Between decode
steps the running batch is filtered (finished and cancelled sequences leave at once) and concatenated with newly
prefilled sequences, as long as the token budget (``max_batch_total_tokens``) allows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from model_engine_server.inference.server.detokenizer import IncrementalDetokenizer
from model_engine_server.inference.server.engine import Batch, ModelRunner
from model_engine_server.inference.server.events import (
    ErrorEvent,
    Event,
    EventSink,
    Finished,
    GeneratedToken,
    LoopSink,
    PrefillToken,
    TokenEvent,
    deliver,
)
from model_engine_server.inference.server.kv_cache import KvPrefix
from model_engine_server.inference.server.metrics import ServerMetrics
from model_engine_server.inference.server.prefix_cache import PrefixCache, plan_prefill, uncached_tokens
from model_engine_server.inference.server.sampling import SamplingParams, TokenChooser, choose_next_tokens
from model_engine_server.inference.server.speculation import propose

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """More requests are in flight than ``max_concurrent_requests`` allows."""


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams
    sink: EventSink
    stop: tuple[str, ...] = ()
    stream: bool = False  # send every token, not just the final event
    prompt_logprobs: bool = False  # TGI's decoder_input_details
    queued_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set by the HTTP side when the client goes away; read between steps
    done: bool = False  # set once by the scheduler when the request leaves (finished, cancelled or failed)

    @property
    def reserved_tokens(self) -> int:
        return len(self.prompt_ids) + self.max_new_tokens


@dataclass(frozen=True)
class BatchLimits:
    max_concurrent_requests: int = 128
    max_batch_total_tokens: int = 16384
    max_batch_prefill_tokens: int = 4096
    max_batch_size: int | None = None
    # As TGI's router: while a batch runs, new requests wait for a prefill until they are numerous enough
    # (waiting >= ratio * running) or have waited this many decode steps. Fewer, larger prefills stall decoding less.
    waiting_served_ratio: float = 1.2
    max_waiting_steps: int = 8


class _Sequence:
    """Scheduler-side state of one request while it is in the batch."""

    def __init__(self, request: GenerationRequest, runner: ModelRunner) -> None:
        self.request = request
        self.chooser = TokenChooser(request.sampling, runner.device)
        self.detokenizer = IncrementalDetokenizer(runner.tokenizer, request.prompt_ids)
        self.history = list(request.prompt_ids)  # prompt + generated, for the penalties
        self.tokens: list[GeneratedToken] = []
        self.text = ""
        self.started_at = time.monotonic()
        self.prefill: tuple[PrefillToken, ...] = ()


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        limits: BatchLimits,
        metrics: ServerMetrics,
        prefix_cache: PrefixCache | None = None,
        speculate: int = 0,
    ) -> None:
        self.runner, self.limits, self.metrics = runner, limits, metrics
        self.speculate = speculate  # most tokens guessed per step for a greedy sequence decoding alone (0: never)
        self.prefix_cache = prefix_cache or PrefixCache(capacity_bytes=0)
        self._waiting: deque[GenerationRequest] = deque()
        self._condition = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._outbox: list[tuple[GenerationRequest, Event]] = []
        self._steps_since_prefill = 0
        self._thread = threading.Thread(target=self._run, name="llm-engine-scheduler", daemon=True)

    # --- called from the event loop -------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout=30)

    @property
    def healthy(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def submit(self, request: GenerationRequest) -> None:
        with self._condition:
            if self._in_flight >= self.limits.max_concurrent_requests:
                raise QueueFullError("Model is overloaded")
            self._in_flight += 1
            self._waiting.append(request)
            self.metrics.queue_size.set(len(self._waiting))
            self._condition.notify()

    def wake(self) -> None:
        """Nudge the loop (e.g. after a cancellation) so it notices without waiting for the next step."""
        with self._condition:
            self._condition.notify()

    # --- the scheduler thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        batch: Batch | None = None
        while True:
            new = self._admit(batch)
            if new is None:
                break
            try:
                batch = self._step(batch, new)
            except Exception as error:  # a failed forward pass must not kill the server: fail just these requests
                logger.exception("Generation step failed")
                for request in [*(seq.request for seq in batch.rows), *new] if batch else new:
                    self._fail(request, f"Generation failed: {error}")
                batch = None
            self._flush()
            self._publish_batch(batch)
        for request in [*(seq.request for seq in batch.rows), *self._waiting] if batch else self._waiting:
            self._fail(request, "The server is shutting down")
        self._flush()

    def _admit(self, batch: Batch | None) -> list[GenerationRequest] | None:
        """Wait for work, then take the waiting requests that fit the budget (FIFO). ``None`` means stop."""
        with self._condition:
            while not self._stopping and not self._waiting and batch is None:
                self._condition.wait()
            if self._stopping:
                return None
            if batch is not None and not self._prefill_due(len(batch)):
                self._steps_since_prefill += 1
                return []
            self._steps_since_prefill = 0
            reserved = sum(seq.request.reserved_tokens for seq in batch.rows) if batch else 0
            size = len(batch) if batch else 0
            taken: list[GenerationRequest] = []
            prefill_tokens = 0
            while self._waiting:
                request = self._waiting[0]
                if request.cancelled:
                    self._waiting.popleft()
                    request.done = True
                    self._in_flight -= 1
                    continue
                cost = uncached_tokens(self.prefix_cache, request)  # what its prefill will compute
                fits = (
                    reserved + request.reserved_tokens <= self.limits.max_batch_total_tokens
                    and (not taken or prefill_tokens + cost <= self.limits.max_batch_prefill_tokens)
                    and (self.limits.max_batch_size is None or size < self.limits.max_batch_size)
                )
                if not fits:
                    break
                self._waiting.popleft()
                taken.append(request)
                reserved += request.reserved_tokens
                prefill_tokens += cost
                size += 1
            self.metrics.queue_size.set(len(self._waiting))
            return taken

    def _prefill_due(self, running: int) -> bool:
        if not self._waiting:
            return False
        if any(request.cancelled for request in self._waiting):
            return True  # let admission drop them now
        enough = len(self._waiting) >= self.limits.waiting_served_ratio * running
        return enough or self._steps_since_prefill >= self.limits.max_waiting_steps

    def _step(self, batch: Batch | None, new: list[GenerationRequest]) -> Batch | None:
        if batch is not None:
            batch = self._drop_cancelled(batch)
        if new:
            prefilled = self._prefill(new)
            # Like TGI, a prefill takes the place of one decode step; the next loop decodes everyone.
            return Batch.concatenate([b for b in (batch, prefilled) if b is not None]) if prefilled else batch
        if batch is None:
            return None
        draft = self._draft(batch)
        started = time.monotonic()
        if draft:
            batch, logits = self.runner.verify(batch, draft)
        else:
            batch, logits = self.runner.decode(batch)
        self.metrics.batch_inference_duration.labels("decode").observe(time.monotonic() - started)
        return self._accept(batch, logits, draft) if draft else self._advance(batch, logits)

    def _draft(self, batch: Batch) -> list[int]:
        """Tokens to guess this step (see ``speculation``): only for a greedy sequence without penalties decoding
        alone. With more rows the step is no longer bound by reading the weights, and a sampled token depends on
        its generator's draws, which guessing would change."""
        if not self.speculate or len(batch) != 1 or batch.padded:
            return []
        seq: _Sequence = batch.rows[0]
        params = seq.request.sampling
        if params.sampling or params.has_penalties:
            return []
        room = seq.request.max_new_tokens - len(seq.tokens) - 1  # the step's own token comes on top of the guess
        return propose(seq.history, min(self.speculate, room))

    def _accept(self, batch: Batch, logits: torch.Tensor, draft: list[int]) -> Batch | None:
        """Send the guessed tokens the model agrees with, then its own next token; forget the rest of the guess."""
        seq: _Sequence = batch.rows[0]
        tokens, logprobs = choose_next_tokens(logits, [seq.chooser] * len(logits), [seq.history] * len(logits))
        accepted = 0
        while accepted < len(draft) and draft[accepted] == tokens[accepted]:
            accepted += 1
        self.metrics.speculative_tokens.labels("accepted").inc(accepted)
        self.metrics.speculative_tokens.labels("rejected").inc(len(draft) - accepted)
        for token, logprob in zip(tokens[: accepted + 1], logprobs[: accepted + 1], strict=True):
            if self._emit(seq, token, logprob):
                return None
        return batch.rewound(len(draft) - accepted).with_next_tokens([tokens[accepted]])

    def _prefill(self, requests: list[GenerationRequest]) -> Batch | None:
        now = time.monotonic()
        for request in requests:
            self.metrics.queue_duration.observe(now - request.queued_at)
            self.metrics.input_length.observe(len(request.prompt_ids))
        groups = plan_prefill(self.prefix_cache, requests, self.metrics)
        batches = [self._prefill_group([requests[i] for i in group.indices], group.prefixes) for group in groups]
        kept = [b for b in batches if b is not None]
        return Batch.concatenate(kept) if kept else None

    def _prefill_group(self, requests: list[GenerationRequest], prefixes: list[KvPrefix | None]) -> Batch | None:
        started = time.monotonic()
        rows = [_Sequence(r, self.runner) for r in requests]
        want_logprobs = any(r.prompt_logprobs for r in requests)
        result = self.runner.prefill(rows, [r.prompt_ids for r in requests], want_logprobs, prefixes)
        self.metrics.batch_inference_duration.labels("prefill").observe(time.monotonic() - started)
        self.prefix_cache.insert_rows(result.batch.cache, [r.prompt_ids for r in requests])
        if want_logprobs:
            assert result.prompt_logprobs is not None
            for seq, logprobs in zip(rows, result.prompt_logprobs, strict=True):
                if seq.request.prompt_logprobs:
                    seq.prefill = self._prefill_tokens(seq.request.prompt_ids, logprobs)
        return self._advance(result.batch, result.last_logits)

    def _prefill_tokens(self, prompt_ids: list[int], logprobs: list[float]) -> tuple[PrefillToken, ...]:
        texts = [self.runner.tokenizer.decode([i], skip_special_tokens=False) for i in prompt_ids]
        first = PrefillToken(prompt_ids[0], texts[0], None)
        rest = (PrefillToken(i, t, lp) for i, t, lp in zip(prompt_ids[1:], texts[1:], logprobs, strict=True))
        return (first, *rest)

    def _advance(self, batch: Batch, logits: torch.Tensor) -> Batch | None:
        """Choose each row's next token, tell its client, and drop the rows that just finished."""
        rows: list[_Sequence] = list(batch.rows)
        tokens, logprobs = choose_next_tokens(logits, [s.chooser for s in rows], [s.history for s in rows])
        keep: list[int] = []
        for index, (seq, token, logprob) in enumerate(zip(rows, tokens, logprobs, strict=True)):
            if not self._emit(seq, token, logprob):
                keep.append(index)
        return batch.with_next_tokens(tokens).filter(keep)

    def _emit(self, seq: _Sequence, token_id: int, logprob: float) -> bool:
        """Record one generated token and send it; returns whether the sequence is finished."""
        request = seq.request
        text = seq.detokenizer.push(token_id)
        token = GeneratedToken(token_id, text, logprob, token_id in self.runner.special_ids)
        seq.tokens.append(token)
        seq.history.append(token_id)
        previous = len(seq.text)
        seq.text += text
        if len(seq.tokens) == 1:
            self.metrics.time_to_first_token.observe(time.monotonic() - request.queued_at)
        reason = self._finish_reason(seq, token_id, previous)
        if reason is not None:
            self._send(request, TokenEvent(len(seq.tokens), token, self._finished(seq, reason)))
            self._retire(request)
            return True
        if request.stream:
            self._send(request, TokenEvent(len(seq.tokens), token))
        if request.cancelled:
            self.metrics.request_failure.labels("cancelled").inc()
            self._retire(request)
            return True
        return False

    def _finish_reason(self, seq: _Sequence, token_id: int, previous_length: int) -> str | None:
        if token_id in self.runner.eos_token_ids:
            return "eos_token"
        for stop in seq.request.stop:
            # Only the new text (plus a stop's length of overlap) can contain a match not seen before.
            if stop in seq.text[max(0, previous_length - len(stop) + 1) :]:
                return "stop_sequence"
        if len(seq.tokens) >= seq.request.max_new_tokens:
            return "length"
        return None

    def _finished(self, seq: _Sequence, reason: str) -> Finished:
        now = time.monotonic()
        ids = [t.id for t in seq.tokens]
        sampling = seq.request.sampling
        generated = len(seq.tokens)
        inference_time = now - seq.started_at
        self.metrics.request_success.inc()
        self.metrics.inference_duration.observe(inference_time)
        self.metrics.generated_tokens.observe(generated)
        self.metrics.mean_time_per_token.observe(inference_time / generated)
        return Finished(
            reason=reason,
            generated_text=self.runner.tokenizer.decode(ids, skip_special_tokens=True),
            tokens=tuple(seq.tokens),
            prefill=seq.prefill,
            seed=sampling.seed if sampling.sampling else None,
            input_length=len(seq.request.prompt_ids),
            queue_time=seq.started_at - seq.request.queued_at,
            inference_time=inference_time,
        )

    def _drop_cancelled(self, batch: Batch) -> Batch | None:
        keep = [i for i, seq in enumerate(batch.rows) if not seq.request.cancelled]
        for seq in batch.rows:
            if seq.request.cancelled:
                self.metrics.request_failure.labels("cancelled").inc()
                self._retire(seq.request)
        return batch.filter(keep)

    def _retire(self, request: GenerationRequest) -> None:
        with self._condition:
            if not request.done:
                request.done = True
                self._in_flight -= 1

    def _fail(self, request: GenerationRequest, message: str) -> None:
        if request.done:
            return
        self.metrics.request_failure.labels("generation").inc()
        self._send(request, ErrorEvent(message))
        self._retire(request)

    def _send(self, request: GenerationRequest, event: Event) -> None:
        self._outbox.append((request, event))

    def _flush(self) -> None:
        """Hand this step's events over: one call per event loop for ``LoopSink``s, directly for other sinks."""
        outbox, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Event], Event]]] = {}
        owners: dict[asyncio.AbstractEventLoop, list[GenerationRequest]] = {}
        for request, event in outbox:
            sink = request.sink
            if isinstance(sink, LoopSink):
                by_loop.setdefault(sink.loop, []).append((sink.queue, event))
                owners.setdefault(sink.loop, []).append(request)
                continue
            try:
                sink(event)
            except Exception:  # the client is gone; nobody is listening any more
                request.cancelled = True
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(deliver, items)
            except RuntimeError:  # that event loop is closed
                for request in owners[loop]:
                    request.cancelled = True

    def _publish_batch(self, batch: Batch | None) -> None:
        self.metrics.batch_size.set(len(batch) if batch else 0)
        self.metrics.batch_max_tokens.set(sum(s.request.reserved_tokens for s in batch.rows) if batch else 0)
