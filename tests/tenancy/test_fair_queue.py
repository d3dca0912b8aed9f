"""Fair queueing at a saturated endpoint: waiting requests are served round-robin across tenants, weighted by
priority, instead of first come, first served; cancelled waiters leave no slot behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from model_engine_server.config import AuthMode, Settings
from model_engine_server.tenancy.fair_queue import FairQueue
from model_engine_server.testing.tgi import running_instant_tgi
from tests.api.completion_support import ALICE, BOB, running_gateway


async def serve_in_order(queue: FairQueue, arrivals: list[tuple[str, int]], capacity: int = 1) -> list[str]:
    """Each arrival (tenant, priority) waits for a slot, in arrival order; returns the tenants in order served.
    A gate keeps the first holder from finishing until everyone queued, so the queue decides the order."""
    served: list[str] = []
    release = asyncio.Event()

    async def request(tenant: str, priority: int) -> None:
        async with queue.slot(tenant, priority, capacity):
            served.append(tenant)
            await release.wait()

    tasks = []
    for tenant, priority in arrivals:
        tasks.append(asyncio.create_task(request(tenant, priority)))
        await asyncio.sleep(0)  # let it reach the queue: arrival order is the order of this list
    release.set()
    await asyncio.gather(*tasks)
    return served


async def test_a_polite_tenant_is_served_next_not_after_the_flood() -> None:
    arrivals = [("flood", 1)] * 20 + [("polite", 1), ("polite", 1)]
    served = await serve_in_order(FairQueue(fair=True), arrivals)
    assert served[:5] == ["flood", "flood", "polite", "flood", "polite"]  # alternating once both wait
    fifo = await serve_in_order(FairQueue(fair=False), arrivals)
    assert fifo[-2:] == ["polite", "polite"]  # first come, first served: behind the whole flood


async def test_priority_weights_the_share_of_slots() -> None:
    arrivals = [("gold", 2)] * 30 + [("bronze", 1)] * 30
    served = await serve_in_order(FairQueue(), arrivals)
    window = served[1:31]  # once both tenants wait
    assert window.count("gold") == 20 and window.count("bronze") == 10


async def test_capacity_is_used_fully_and_cancelled_waiters_free_nothing_they_did_not_hold() -> None:
    queue = FairQueue()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(tenant: str) -> None:
        async with queue.slot(tenant, 1, 2):
            holding.set()
            await release.wait()

    holders = [asyncio.create_task(hold("a")), asyncio.create_task(hold("b"))]
    await asyncio.wait_for(holding.wait(), 5)
    await asyncio.sleep(0)
    assert queue.in_flight == 2
    waiter = asyncio.create_task(hold("c"))
    await asyncio.sleep(0)
    assert queue.waiting == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert queue.waiting == 0 and queue.in_flight == 2
    release.set()
    await asyncio.gather(*holders)
    assert queue.in_flight == 0


async def test_through_the_gateway_a_flooding_tenant_does_not_push_others_to_the_back(
    database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", auth_mode=AuthMode.OPEN, fair_queue_overcommit=1
    )
    body = {"prompt": "hi", "max_new_tokens": 5, "temperature": 0}
    stream = "/v1/llm/completions-stream?model_endpoint_name=shared"
    finished: list[str] = []

    async def complete(client: httpx.AsyncClient, who: tuple[str, str]) -> None:
        async with client.stream("POST", stream, json=body, auth=who) as response:
            await response.aread()
            assert response.status_code == 200
        finished.append(who[0])

    # Each request holds the endpoint for 5 x 50 ms: far longer than Bob's own way to the queue on a loaded machine.
    async with running_instant_tgi(token_delay=0.05) as engine, running_gateway(settings) as gateway:
        await gateway.add_endpoint("shared", [engine.url], public_inference=True, per_worker=1)
        async with gateway.client() as client:
            flood = [asyncio.create_task(complete(client, ALICE)) for _ in range(12)]

            async def gateway_holds_all_of_them() -> bool:
                metrics = (await client.get("/metrics")).text
                return any(
                    line.startswith("llm_engine_endpoint_inflight_requests{") and line.endswith(" 12.0")
                    for line in metrics.splitlines()
                )

            deadline = asyncio.get_running_loop().time() + 20
            while not await gateway_holds_all_of_them():
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            await complete(client, BOB)
            await asyncio.gather(*flood)
    assert finished.index(BOB[0]) <= 2, finished  # served in turn, not after the flood
    assert engine.served == 13
