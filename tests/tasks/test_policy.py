"""Retry policy: which upstream failures are retried, and the backoff's bounds."""

from __future__ import annotations

import random

import httpx

from model_engine_server.domain.exceptions import (
    EndpointNotReadyError,
    InvalidRequestError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from model_engine_server.tasks.policy import RETRY_CAP_SECONDS, ordinary_thread_limit, retry_delay
from model_engine_server.tasks.runtime import EndpointSlots, is_retryable


def _caused_by(error: UpstreamError, cause: Exception) -> UpstreamError:
    error.__cause__ = cause
    return error


def test_429_503_and_connection_failures_are_retried_other_errors_are_not() -> None:
    assert is_retryable(OverloadedError("429"))
    assert is_retryable(EndpointNotReadyError("503"))
    assert is_retryable(_caused_by(UpstreamError("lost"), httpx.RemoteProtocolError("closed")))
    assert is_retryable(_caused_by(UpstreamTimeoutError("connect"), httpx.ConnectTimeout("slow connect")))
    assert not is_retryable(_caused_by(UpstreamTimeoutError("read"), httpx.ReadTimeout("thought too long")))
    assert not is_retryable(UpstreamError("The model server failed with HTTP 500: boom"))
    assert not is_retryable(InvalidRequestError("422"))


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        delays = [retry_delay(attempt, rng) for _ in range(200)]
        ceiling = min(RETRY_CAP_SECONDS, 2.0**attempt)
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a fixed delay
    assert len({round(retry_delay(3, rng), 6) for _ in range(50)}) > 40


def test_endpoint_slots_bound_each_endpoint_separately() -> None:
    slots = EndpointSlots()
    assert slots.try_enter("a", 2)
    assert slots.try_enter("a", 2)
    assert not slots.try_enter("a", 2)
    assert slots.try_enter("b", 2)  # another endpoint is not affected
    slots.leave("a")
    assert slots.try_enter("a", 2)


def test_a_quarter_of_the_threads_is_kept_for_high_priority_endpoints() -> None:
    assert [ordinary_thread_limit(threads) for threads in (1, 2, 4, 8, 16)] == [1, 1, 3, 6, 12]
