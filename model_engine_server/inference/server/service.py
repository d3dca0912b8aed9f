"""The bridge between HTTP handlers (event loop) and the scheduler thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from model_engine_server.inference.server.engine import ModelRunner
from model_engine_server.inference.server.events import ErrorEvent, Event, LoopSink, TokenEvent
from model_engine_server.inference.server.metrics import ServerMetrics
from model_engine_server.inference.server.scheduler import GenerationRequest, Scheduler
from model_engine_server.inference.server.validation import RequestValidator, ValidRequest

# How often a non-streaming request checks whether its client is still there.
_DISCONNECT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class ServerInfo:
    model_id: str
    version: str
    max_input_tokens: int
    max_total_tokens: int
    max_stop_sequences: int
    max_concurrent_requests: int
    max_batch_total_tokens: int
    max_batch_size: int | None


class Generation:
    """One submitted request: its events in order, and a way to give up on it."""

    def __init__(self, request: GenerationRequest, queue: asyncio.Queue[Event], scheduler: Scheduler) -> None:
        self.request = request
        self._queue = queue
        self._scheduler = scheduler

    async def events(self) -> AsyncIterator[Event]:
        """Yield events until the final token or an error. Leaving early cancels the generation."""
        try:
            while True:
                event = await self._queue.get()
                yield event
                if isinstance(event, ErrorEvent) or event.finished is not None:
                    return
        finally:
            self.cancel()

    async def result(self, is_disconnected: Callable[[], Awaitable[bool]]) -> Event:
        """Wait for the final event; if the client goes away meanwhile, cancel and raise ``CancelledError``."""
        try:
            while True:
                try:
                    event = await asyncio.wait_for(self._queue.get(), _DISCONNECT_POLL_SECONDS)
                except TimeoutError:
                    if await is_disconnected():
                        raise asyncio.CancelledError from None
                    continue
                if isinstance(event, ErrorEvent) or (isinstance(event, TokenEvent) and event.finished is not None):
                    return event
        finally:
            self.cancel()

    def cancel(self) -> None:
        if not self.request.done:
            self.request.cancelled = True
            self._scheduler.wake()


class InferenceService:
    def __init__(
        self,
        runner: ModelRunner,
        scheduler: Scheduler,
        validator: RequestValidator,
        metrics: ServerMetrics,
        info: ServerInfo,
    ) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.validator = validator
        self.metrics = metrics
        self.info = info

    def submit(self, valid: ValidRequest, *, stream: bool, prompt_logprobs: bool = False) -> Generation:
        """Queue a validated request; raises ``QueueFullError`` when too many are in flight."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        sink = LoopSink(asyncio.get_running_loop(), queue)
        request = GenerationRequest(
            prompt_ids=valid.prompt_ids,
            max_new_tokens=valid.max_new_tokens,
            sampling=valid.sampling,
            sink=sink,
            stop=valid.stop,
            stream=stream,
            prompt_logprobs=prompt_logprobs,
        )
        self.scheduler.submit(request)
        return Generation(request, queue, self.scheduler)

    def apply_chat_template(self, messages: list[dict[str, object]], template: str | None = None) -> str:
        """The prompt for ``messages``: the tokenizer's chat template, or ``template`` when given."""
        text: str = self.runner.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        return text
