"""Polling helpers: wait for a condition with a deadline, never a fixed sleep."""

from __future__ import annotations

from typing import Any

import httpx

from model_engine_server.testing import eventually_async

FINAL = ("SUCCESS", "FAILURE")


async def task_state(client: httpx.AsyncClient, task_id: str, caller: str = "alice") -> dict[str, Any]:
    response = await client.get(f"/v1/async-tasks/{task_id}", headers={"x-api-key": caller})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_status(
    client: httpx.AsyncClient, task_id: str, statuses: tuple[str, ...] = FINAL, timeout: float = 60.0
) -> dict[str, Any]:
    latest: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal latest
        latest = await task_state(client, task_id)
        return latest["status"] in statuses

    await eventually_async(
        reached, timeout=timeout, what=lambda: f"task {task_id} to reach {statuses} (last: {latest})"
    )
    return latest


async def post_async_completion(
    client: httpx.AsyncClient, endpoint: str, prompt: str, max_new_tokens: int, caller: str
) -> httpx.Response:
    return await client.post(
        "/v1/llm/completions-async",
        params={"model_endpoint_name": endpoint},
        json={"prompt": prompt, "max_new_tokens": max_new_tokens, "temperature": 0.0},
        headers={"x-api-key": caller},
    )


async def submit(
    client: httpx.AsyncClient,
    endpoint: str,
    prompt: str = "hello there",
    max_new_tokens: int = 5,
    caller: str = "alice",
) -> str:
    """The id of a new async task; fails the test unless the gateway accepted it."""
    response = await post_async_completion(client, endpoint, prompt, max_new_tokens, caller)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["task_id"]
    return task_id
