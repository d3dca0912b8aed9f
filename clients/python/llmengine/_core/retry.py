"""When to try a request again and how long to wait first — decisions only, no sleeping and no sockets."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from llmengine import _constants as policy


class Failure(Enum):
    """How a request failed without an HTTP answer; decides whether repeating it could do the work twice."""

    NOT_SENT = "not_sent"  # connection refused, DNS, connect timeout, no free connection: the server saw nothing
    NO_ANSWER = "no_answer"  # sent, then a read/write timeout or a dropped connection: the server may have acted


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff, capped, for 429/503 answers and connection failures.

    A request that may have reached the server (``Failure.NO_ANSWER``) is repeated only if it is idempotent: a
    POST that timed out while reading might have created an endpoint or started a generation already.
    """

    max_retries: int = policy.MAX_RETRIES
    initial_delay: float = policy.INITIAL_RETRY_DELAY
    max_delay: float = policy.MAX_RETRY_DELAY
    multiplier: float = policy.RETRY_MULTIPLIER
    jitter: float = policy.RETRY_JITTER
    retry_statuses: frozenset[int] = field(default_factory=lambda: policy.RETRYABLE_STATUSES)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("retry policy values must be non-negative and jitter within 0..1")

    def should_retry_status(self, status_code: int, attempt: int) -> bool:
        """``attempt`` counts retries already made (0 after the first try)."""
        return attempt < self.max_retries and status_code in self.retry_statuses

    def should_retry_failure(self, failure: Failure, *, idempotent: bool, attempt: int) -> bool:
        if attempt >= self.max_retries:
            return False
        return failure is Failure.NOT_SENT or idempotent

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number ``attempt + 1``; a server's ``Retry-After`` is honoured up to the cap."""
        base = min(self.max_delay, self.initial_delay * self.multiplier**attempt)
        jittered = base * (1 - self.jitter + 2 * self.jitter * rand())
        if retry_after is not None:
            jittered = max(jittered, retry_after)
        return min(self.max_delay, jittered)


NO_RETRIES = RetryPolicy(max_retries=0)


def poll_intervals(
    initial: float = policy.POLL_INITIAL_INTERVAL,
    multiplier: float = policy.POLL_MULTIPLIER,
    maximum: float = policy.POLL_MAX_INTERVAL,
) -> Iterator[float]:
    """Endless waits between polls of an async task: quick at first, then steady at ``maximum``."""
    interval = initial
    while True:
        yield interval
        interval = min(maximum, interval * multiplier)
