"""Replica routing through the real gateway: a shared prompt prefix stays on one replica, and /metrics shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_engine_server.config import RoutingPolicy, Settings
from model_engine_server.testing.tgi import running_instant_tgi
from tests.api.completion_support import ALICE, RunningGateway, loopback_settings

SYSTEM = "You are the assistant of a small bakery. Answer politely, briefly, and never invent prices. " * 6


@pytest.fixture
def settings(sqlite_url: str, tmp_path: Path) -> Settings:
    return loopback_settings(sqlite_url, tmp_path).model_copy(update={"routing_policy": RoutingPolicy.PREFIX_AFFINITY})


def sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.split()[-1])
    return 0.0


async def test_a_shared_prefix_stays_on_its_replica_on_every_route(gateway: RunningGateway) -> None:
    async with running_instant_tgi() as a, running_instant_tgi() as b:
        await gateway.add_endpoint("bakery", [a.url, b.url])
        async with gateway.client() as client:
            for turn in range(3):
                native = {"prompt": f"{SYSTEM}Customer: question {turn}?", "max_new_tokens": 2, "temperature": 0}
                response = await client.post(
                    "/v1/llm/completions-sync", params={"model_endpoint_name": "bakery"}, json=native, auth=ALICE
                )
                assert response.status_code == 200, response.text
            openai = {"model": "bakery", "prompt": f"{SYSTEM}Customer: one more?", "max_tokens": 2}
            assert (await client.post("/v1/completions", json=openai, auth=ALICE)).status_code == 200
            metrics = (await client.get("/metrics")).text
        served = {a.url: a.served, b.url: b.served}
        home = max(served, key=lambda url: served[url])
        assert sorted(served.values()) == [0, 4]
        assert sample(metrics, "llm_engine_replica_chosen_total", reason="prefix_affinity", replica=home) >= 3
        assert sample(metrics, "llm_engine_replica_inflight_requests", replica=home) == 0
