"""Fair queueing in front of a saturated endpoint.

Each endpoint admits at most ``capacity`` requests at once from this gateway (its ready replicas × ``per_worker`` ×
the overcommit setting). Beyond that, requests wait, and a freed slot goes to the waiting *tenant* with the least
service so far — weighted by its priority (stride scheduling: each grant advances the tenant's virtual time by
1/priority; a tenant that starts waiting joins at the current virtual time, so idling earns no credit). A tenant
flooding the endpoint therefore gets its share, not the whole queue. ``fair=False`` serves waiters first come,
first served (the benchmark's baseline).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Tenant:
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    virtual_time: float = 0.0
    weight: float = 1.0


class FairQueue:
    """One endpoint's admission: ``async with queue.slot(tenant, priority, capacity): ...``."""

    def __init__(self, *, fair: bool = True) -> None:
        self._fair = fair
        self._in_flight = 0
        self._capacity = 1
        self._tenants: dict[str, _Tenant] = {}
        self._clock = 0.0  # the virtual start time of the last grant

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return sum(len(t.waiters) for t in self._tenants.values())

    @asynccontextmanager
    async def slot(self, tenant: str, priority: int, capacity: int) -> AsyncIterator[None]:
        self._capacity = max(1, capacity)
        await self._acquire(tenant if self._fair else "", max(1, priority))
        try:
            yield
        finally:
            self._in_flight -= 1
            self._grant()

    async def _acquire(self, tenant: str, priority: int) -> None:
        if self._in_flight < self._capacity and not self._tenants:
            self._in_flight += 1
            return
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant(virtual_time=self._clock)
        state.weight = priority
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        self._grant()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, but the caller went away: pass it on
                self._in_flight -= 1
                self._grant()
            else:
                self._drop(tenant, waiter)
            raise

    def _grant(self) -> None:
        while self._in_flight < self._capacity and self._tenants:
            name, state = min(self._tenants.items(), key=lambda item: item[1].virtual_time)
            waiter = state.waiters.popleft()
            # The clock is the start of the grant being served: a tenant arriving now ranks ahead of one that has
            # just been served (whose time moved past it), so it is next rather than after another grant.
            self._clock = state.virtual_time
            state.virtual_time += 1.0 / state.weight
            if not state.waiters:
                del self._tenants[name]
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    def _drop(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        state = self._tenants.get(tenant)
        if state is not None and waiter in state.waiters:
            state.waiters.remove(waiter)
            if not state.waiters:
                del self._tenants[tenant]
