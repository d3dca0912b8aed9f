"""Helpers of the OpenAI-route tests: requests with a Bearer key, and reading OpenAI-style streams."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.api.completion_support import ALICE, RunningGateway

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
BEARER = {"Authorization": f"Bearer {ALICE[0]}"}


async def post(gateway: RunningGateway, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(path, json=body, headers=kwargs.pop("headers", BEARER), **kwargs)


async def stream_chunks(gateway: RunningGateway, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    """The response and every ``data:`` payload, raw (so ``[DONE]`` is visible)."""
    async with gateway.client() as client, client.stream("POST", path, json=body, headers=BEARER) as response:
        return response, [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]


def decoded(payloads: list[str]) -> list[dict[str, Any]]:
    assert payloads[-1] == "[DONE]"
    return [orjson.loads(payload) for payload in payloads[:-1]]


def chat_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])


def assert_openai_error(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error
