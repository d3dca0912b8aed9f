"""The completion gate: what every completion passes through on its way to an endpoint, whichever route it came
in by (``inference.completions.CompletionDispatcher`` calls it): the tenant's concurrent-request limit, the
endpoint's fair queue, and usage accounting (and the token charge) when the completion ends. The token budget is
checked earlier, at admission (``domain.admission``), so async submits are refused too."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from model_engine_server.domain.entities import ModelEndpoint
from model_engine_server.tenancy.fair_queue import FairQueue
from model_engine_server.tenancy.limiter import TenantLimiter
from model_engine_server.tenancy.usage import UsageRecorder


class CompletionGate:
    def __init__(
        self, limiter: TenantLimiter, usage: UsageRecorder | None, *, fair: bool = True, overcommit: float = 2.0
    ) -> None:
        self.limiter = limiter
        self._usage = usage
        self._fair = fair
        self._overcommit = overcommit  # 0: no queueing at the gateway (the engines queue, first come first served)
        self._queues: dict[str, FairQueue] = {}

    @asynccontextmanager
    async def slot(self, tenant: str, endpoint: ModelEndpoint, replicas: int) -> AsyncIterator[None]:
        """Hold a tenant concurrency slot, then a place at the endpoint (waiting in its fair queue when full)."""
        async with self.limiter.concurrent_slot(tenant):
            if self._overcommit <= 0:
                yield
                return
            # On Kubernetes the upstream is one Service URL whatever the replica count: use the observed replicas.
            ready = max(1, replicas, endpoint.available_workers)
            capacity = math.ceil(ready * endpoint.config.per_worker * self._overcommit)
            queue = self._queues.get(endpoint.id)
            if queue is None:
                queue = self._queues[endpoint.id] = FairQueue(fair=self._fair)
            priority = (await self.limiter.limits(tenant)).priority
            async with queue.slot(tenant, priority, capacity):
                yield

    async def finished(self, tenant: str, endpoint: ModelEndpoint, prompt_tokens: int, completion_tokens: int) -> None:
        if self._usage is not None:
            self._usage.record(tenant, endpoint.name, prompt_tokens, completion_tokens)
        await self.limiter.charge_tokens(tenant, completion_tokens)
