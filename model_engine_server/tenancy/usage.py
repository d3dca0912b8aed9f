"""Usage accounting: per-tenant token counters in ``/metrics`` at once, and rows in the registry written in batches
off the request path (one transaction per flush interval, summed per tenant, endpoint and hour)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime

from prometheus_client import Counter

from model_engine_server.db.models import utcnow
from model_engine_server.db.tenancy import UsageRecord, UsageStore

log = logging.getLogger(__name__)

PROMPT_TOKENS = Counter(
    "llm_engine_tenant_prompt_tokens", "Prompt tokens of completed requests, per tenant.", ["tenant"]
)
COMPLETION_TOKENS = Counter(
    "llm_engine_tenant_completion_tokens", "Generated tokens of completed requests, per tenant.", ["tenant"]
)
_MAX_PENDING = 100_000  # tenant × endpoint × hour groups kept while the database is unreachable


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class UsageRecorder:
    def __init__(self, store: UsageStore, flush_seconds: float = 5.0) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._pending: defaultdict[tuple[str, str, datetime], list[int]] = defaultdict(lambda: [0, 0, 0])
        self._task: asyncio.Task[None] | None = None

    def record(self, tenant: str, endpoint_name: str, prompt_tokens: int, completion_tokens: int) -> None:
        """One finished completion (cheap: counters and a dict update)."""
        PROMPT_TOKENS.labels(tenant).inc(prompt_tokens)
        COMPLETION_TOKENS.labels(tenant).inc(completion_tokens)
        totals = self._pending[(tenant, endpoint_name, _hour(utcnow()))]
        totals[0] += 1
        totals[1] += prompt_tokens
        totals[2] += completion_tokens

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
        records = [UsageRecord(t, e, hour, *counts) for (t, e, hour), counts in batch.items()]
        try:
            await self._store.add(records)
        except Exception:
            log.warning(
                "usage: could not write %d records; keeping them for the next flush", len(records), exc_info=True
            )
            if len(self._pending) + len(batch) <= _MAX_PENDING:
                for key, counts in batch.items():
                    merged = self._pending[key]
                    for index, value in enumerate(counts):
                        merged[index] += value

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()
