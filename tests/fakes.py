"""In-memory fakes of our own ports, for tests of the layers above them."""

from __future__ import annotations

import asyncio

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.orchestration import events


class FakeOrchestrator:
    """Records what it was asked to do; tests set what it observes."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, int]] = []
        self.deleted: list[str] = []
        self.observed: dict[str, ObservedState] = {}
        self.asleep: dict[str, bool] = {}  # what the reconciler asked for, by endpoint name
        self._changed = asyncio.Event()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, endpoint: ModelEndpoint) -> None:
        self.applied.append((endpoint.name, endpoint.revision))

    async def delete(self, endpoint: ModelEndpoint) -> None:
        self.deleted.append(endpoint.name)

    async def observe(self, endpoint: ModelEndpoint) -> ObservedState:
        return self.observed.get(endpoint.name, ObservedState(status=EndpointStatus.UPDATE_IN_PROGRESS))

    async def wait_for_change(self, timeout: float) -> None:
        await events.wait_for_change(self._changed, timeout)

    async def set_asleep(self, endpoint: ModelEndpoint, asleep: bool) -> None:
        self.asleep[endpoint.name] = asleep

    def notify(self) -> None:
        self._changed.set()


class FakeResolver:
    """Routes each endpoint (by name) to the upstreams a test sets."""

    def __init__(self) -> None:
        self.routes: dict[str, list[str]] = {}

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        return list(self.routes.get(endpoint.name, []))
