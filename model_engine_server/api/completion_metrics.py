"""Prometheus metrics of the completion routes, and the per-request observation that records them.

Metric objects are process-wide by nature (one default registry per process), so they are module level.
``llm_engine_endpoint_inflight_requests`` is also what the KEDA scaler queries per endpoint (see config.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

from model_engine_server.api.errors import status_for
from model_engine_server.domain.exceptions import DomainError

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# ``protocol`` is the API the request came in on: ``native`` (/v1/llm/completions-*) or ``openai``.
COMPLETION_REQUESTS = Counter(
    "llm_engine_completion_requests",
    "Completion requests by kind (sync, stream), outcome (HTTP status, or client_disconnected) and protocol.",
    ["kind", "outcome", "protocol"],
)
COMPLETION_LATENCY = Histogram(
    "llm_engine_completion_latency_seconds",
    "Time from request to the last byte of the completion.",
    ["kind", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "llm_engine_completion_time_to_first_token_seconds",
    "Streams: time from request to the first token received from the model server.",
    ["protocol"],
    buckets=_LATENCY_BUCKETS,
)
COMPLETION_TOKENS = Counter(
    "llm_engine_completion_tokens",
    "Tokens of answered completions, by type (prompt, completion) and protocol, as the model server counted them.",
    ["type", "protocol"],
)
INFLIGHT = Gauge(
    "llm_engine_endpoint_inflight_requests",
    "Completion requests in flight through this gateway, per endpoint.",
    ["endpoint_id"],
)


class RequestObservation:
    """One request's metrics: created when the endpoint is known, ``finish`` exactly once (extra calls ignored)."""

    def __init__(self, kind: str, endpoint_id: str, started: float | None = None, protocol: str = "native") -> None:
        self.kind = kind
        self.protocol = protocol
        self.started = time.perf_counter() if started is None else started
        self._inflight = INFLIGHT.labels(endpoint_id)
        self._inflight.inc()
        self._finished = False

    def first_token(self) -> None:
        TIME_TO_FIRST_TOKEN.labels(self.protocol).observe(time.perf_counter() - self.started)

    def tokens(self, prompt: int | None, completion: int | None) -> None:
        if prompt:
            COMPLETION_TOKENS.labels("prompt", self.protocol).inc(prompt)
        if completion:
            COMPLETION_TOKENS.labels("completion", self.protocol).inc(completion)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """``finish`` with the block's outcome: 200, the domain error's status, 500, or client_disconnected (the
        request was cancelled inside the block)."""
        outcome = "client_disconnected"
        try:
            yield
            outcome = "200"
        except DomainError as exc:
            outcome = str(status_for(exc))
            raise
        except Exception:
            outcome = "500"
            raise
        finally:
            self.finish(outcome)

    def finish(self, outcome: str) -> None:
        if self._finished:
            return
        self._finished = True
        self._inflight.dec()
        COMPLETION_REQUESTS.labels(self.kind, outcome, self.protocol).inc()
        COMPLETION_LATENCY.labels(self.kind, self.protocol).observe(time.perf_counter() - self.started)


def count_rejected(kind: str, status_code: int, protocol: str = "native") -> None:
    """A request refused before it reached an endpoint (404, 503, 400)."""
    COMPLETION_REQUESTS.labels(kind, str(status_code), protocol).inc()
