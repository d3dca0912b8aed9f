"""Reading server-sent events the way TGI's and OpenAI's clients do: only ``data:`` lines count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


def data_lines(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data:"):
            yield line[len("data:") :].strip()


def events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(data) for data in data_lines(response) if data != "[DONE]"]


def stream(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    with client.stream("POST", path, json=body) as response:
        return response.status_code, events(response)
