"""What the scheduler thread tells HTTP handlers: generated tokens, the final result, errors, and how they travel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratedToken:
    id: int
    text: str
    logprob: float
    special: bool


@dataclass(frozen=True)
class PrefillToken:
    id: int
    text: str
    logprob: float | None


@dataclass(frozen=True)
class Finished:
    reason: str  # length | eos_token | stop_sequence
    generated_text: str
    tokens: tuple[GeneratedToken, ...]
    prefill: tuple[PrefillToken, ...]
    seed: int | None  # only when sampling, as TGI reports it
    input_length: int
    queue_time: float
    inference_time: float


@dataclass(frozen=True)
class TokenEvent:
    index: int  # 1-based position of the token in the output
    token: GeneratedToken
    finished: Finished | None = None


@dataclass(frozen=True)
class ErrorEvent:
    message: str
    error_type: str = "generation"


Event = TokenEvent | ErrorEvent
EventSink = Callable[[Event], None]


@dataclass(frozen=True)
class LoopSink:
    """Delivers events into an asyncio queue owned by ``loop``. The scheduler batches these: one wake-up of each
    event loop per step, instead of one per token per request."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]

    def __call__(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


def deliver(items: list[tuple[asyncio.Queue[Event], Event]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)
