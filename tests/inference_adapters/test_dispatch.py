"""CompletionDispatcher (over the one admission path) with in-memory fakes of the registry and the replica resolver:
routing rules and the endpoint cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from model_engine_server.domain.admission import Admission
from model_engine_server.domain.completions import CompletionRequest
from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, InferenceFramework, ModelEndpoint
from model_engine_server.domain.exceptions import EndpointNotFoundError, EndpointNotReadyError, InvalidRequestError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.inference.adapters import VllmAdapter
from model_engine_server.inference.completions import CompletionDispatcher
from model_engine_server.inference.upstream import UpstreamClient
from tests.fakes import FakeResolver

REQUEST = CompletionRequest(prompt="x", max_new_tokens=4, temperature=0.0)


def endpoint(status: EndpointStatus = EndpointStatus.READY, **config: object) -> ModelEndpoint:
    now = datetime.now(UTC)
    return ModelEndpoint(
        id="end_1",
        name="llm",
        owner="alice",
        created_by="alice",
        created_at=now,
        last_updated_at=now,
        config=EndpointConfig(**({"model_name": "smollm2-135m"} | config)),  # type: ignore[arg-type]
        status=status,
    )


class Registry:
    """Counts lookups; ``gate`` holds them until the test releases it."""

    def __init__(self, found: ModelEndpoint | None) -> None:
        self.found = found
        self.lookups = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def get_for_inference(self, name: str, caller: str) -> ModelEndpoint:
        self.lookups += 1
        await self.gate.wait()
        if self.found is None or caller != self.found.owner:
            raise EndpointNotFoundError(name)
        return self.found

    async def get_by_id(self, endpoint_id: str) -> ModelEndpoint | None:
        self.lookups += 1
        return self.found if self.found is not None and self.found.id == endpoint_id else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def upstream() -> UpstreamClient:
    client = UpstreamClient()
    yield client  # type: ignore[misc]
    await client.aclose()


def dispatcher(registry: Registry, upstream: UpstreamClient, clock: Clock | None = None) -> CompletionDispatcher:
    resolver = FakeResolver()
    resolver.routes["llm"] = ["http://10.0.0.1:80"]
    admission = Admission(registry, resolver, ModelZoo(), clock=clock or Clock())
    return CompletionDispatcher(admission, upstream)


async def test_route_picks_the_adapter_and_the_replicas(upstream: UpstreamClient) -> None:
    registry = Registry(endpoint(inference_framework=InferenceFramework.VLLM))
    route = await dispatcher(registry, upstream).route("llm", "alice", REQUEST)
    assert isinstance(route.adapter, VllmAdapter)
    assert route.upstreams == ["http://10.0.0.1:80"]


async def test_rules_not_found_not_ready_and_too_many_tokens(upstream: UpstreamClient) -> None:
    with pytest.raises(EndpointNotFoundError):
        await dispatcher(Registry(endpoint()), upstream).route("llm", "bob", REQUEST)
    pending = Registry(endpoint(EndpointStatus.UPDATE_PENDING))
    with pytest.raises(EndpointNotReadyError, match="UPDATE_PENDING"):
        await dispatcher(pending, upstream).route("llm", "alice", REQUEST)
    long = CompletionRequest(prompt="x", max_new_tokens=2049, temperature=0.0)
    with pytest.raises(InvalidRequestError, match="2048"):
        await dispatcher(Registry(endpoint()), upstream).route("llm", "alice", long)


async def test_lookups_are_cached_and_refreshed_once_for_a_burst(upstream: UpstreamClient) -> None:
    registry = Registry(endpoint())
    clock = Clock()
    routes = dispatcher(registry, upstream, clock)
    await routes.route("llm", "alice", REQUEST)
    await routes.route("llm", "alice", REQUEST)
    assert registry.lookups == 1

    clock.now += 1.5  # expired: a burst is served from the old entry while one lookup refreshes it
    registry.gate.clear()
    await asyncio.gather(*(routes.route("llm", "alice", REQUEST) for _ in range(20)))
    assert registry.lookups == 2

    registry.found = endpoint(EndpointStatus.UPDATE_IN_PROGRESS)
    registry.gate.set()  # the refresh completes and its result replaces the entry
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            await routes.route("llm", "alice", REQUEST)
        except EndpointNotReadyError:
            break
        assert asyncio.get_running_loop().time() < deadline, "the refreshed status never showed"
        await asyncio.sleep(0.01)
    # The burst cost one refresh; answering 503 costs one more lookup, to confirm the status is not stale.
    assert registry.lookups == 3


async def test_very_old_entries_and_deleted_endpoints_are_looked_up_again(upstream: UpstreamClient) -> None:
    registry = Registry(endpoint())
    clock = Clock()
    routes = dispatcher(registry, upstream, clock)
    await routes.route("llm", "alice", REQUEST)
    registry.found = None
    clock.now += 60  # far beyond the stale window: no stale answer, the lookup decides
    with pytest.raises(EndpointNotFoundError):
        await routes.route("llm", "alice", REQUEST)
