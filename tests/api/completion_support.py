"""What the completion tests run: the real gateway on a real socket, an OpenAI-protocol (vLLM-like) test server next
to the instant TGI server from ``benchmarks/``, and a way to make an endpoint READY and route it to them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from model_engine_server.api.app import create_app
from model_engine_server.config import AuthMode, Settings
from model_engine_server.domain.entities import EndpointStatus, ObservedState
from model_engine_server.testing import eventually_async
from model_engine_server.testing.tgi import VOCABULARY, InstantTgiServer, running_instant_tgi
from tests.fakes import FakeResolver

ALICE = ("alice-key", "")
BOB = ("bob-key", "")


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (without blocking the loop) until ``condition`` holds; fail after ``timeout`` seconds."""
    await eventually_async(condition, timeout=timeout)


@contextlib.asynccontextmanager
async def serve_on_loopback(app: Any) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in this event loop; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started or task.done())
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def loopback_settings(database_url: str, tmp_path: Path) -> Settings:
    """Open auth on ``database_url`` (the ``sqlite_url`` fixture), with fast keep-alive pings (tests see them)."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        auth_mode=AuthMode.OPEN,
        stream_keepalive_seconds=0.05,
    )


@dataclass
class RunningGateway:
    url: str
    app: FastAPI
    resolver: FakeResolver

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20, **kwargs)

    async def add_endpoint(
        self,
        name: str,
        upstreams: list[str],
        *,
        framework: str = "text_generation_inference",
        owner: tuple[str, str] = ALICE,
        status: EndpointStatus = EndpointStatus.READY,
        reason: str | None = None,
        **fields: Any,
    ) -> None:
        """Create the endpoint through the API, then record what an orchestrator would observe."""
        body = {"name": name, "model_name": "smollm2-135m", "inference_framework": framework, **fields}
        async with self.client() as client:
            created = await client.post("/v1/llm/model-endpoints", json=body, auth=owner)
        assert created.status_code == 200, created.text
        registry = self.app.state.services.endpoints
        endpoint = await registry.get_owned(name, owner[0])
        observed = ObservedState(status=status, available_workers=len(upstreams), reason=reason)
        assert await registry.record_observed(endpoint.id, endpoint.revision, observed)
        self.resolver.routes[name] = list(upstreams)


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[RunningGateway]:
    resolver = FakeResolver()
    app = create_app(settings, resolver=resolver)
    async with serve_on_loopback(app) as url:
        yield RunningGateway(url, app, resolver)


async def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Every ``data:`` event of an SSE response, decoded (comment lines such as ``: ping`` skipped)."""
    return [orjson.loads(line[5:]) async for line in response.aiter_lines() if line.startswith("data:")]


# --- an OpenAI-protocol server behaving like vLLM's /v1/completions ------------------------------------------------

_OPENAI_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "n",
        "stop",
        "stream",
        "stream_options",
        "logprobs",
        "presence_penalty",
        "frequency_penalty",
        "include_stop_str_in_output",
        "echo",
        "seed",
        "min_p",
        "repetition_penalty",
        "min_tokens",
        "ignore_eos",
    }
)
_CHAT_FIELDS = (_OPENAI_FIELDS - {"prompt", "echo"}) | {
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "chat_template_kwargs",
    "chat_template",
}


@dataclass
class FakeOpenAiServer:
    """Generates the same words as the instant TGI server, in vLLM's wire format (usage chunk, ``[DONE]``); its chat
    route (``chat`` below) has vLLM's chunk shapes too: a role-only first chunk, then content deltas."""

    token_delay: float = 0.0
    fail_after: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    cancelled: int = 0
    url: str = ""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    def _problem(self, body: dict[str, Any], known: frozenset[str] = _OPENAI_FIELDS) -> str | None:
        unknown = set(body) - known
        if unknown:
            return f"unknown fields {sorted(unknown)}"
        if not 0 <= body.get("temperature", 1.0) <= 2:
            return "temperature must be in [0, 2]"
        if not 0 < body.get("top_p", 1.0) <= 1:
            return "top_p must be in (0, 1]"
        top_k = body.get("top_k", -1)
        if top_k != -1 and top_k < 1:
            return "top_k must be -1 (disable), or at least 1"
        return None

    def _generate(self, body: dict[str, Any]) -> tuple[list[str], str]:
        stops = body.get("stop") or []
        words: list[str] = []
        text = ""
        for index in range(body.get("max_tokens", 16)):
            word = " " + VOCABULARY[index % len(VOCABULARY)]
            words.append(word)
            text += word
            if any(text.endswith(stop) for stop in stops):
                if not body.get("include_stop_str_in_output"):
                    words[-1] = word[: len(word) - len(next(s for s in stops if text.endswith(s)))]
                return words, "stop"
        return words, "length"

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        problem = self._problem(body, _CHAT_FIELDS)
        if problem is not None:
            error = {"object": "error", "message": problem, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse(error, status_code=400)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 16
        words, finish_reason = self._generate({**body, "max_tokens": limit})
        prompt_tokens = sum(len(message["content"].split()) for message in body["messages"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        usage["total_tokens"] = prompt_tokens + len(words)
        n = body.get("n", 1)
        head = {"id": "chatcmpl-vllm", "created": 0, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words), "tool_calls": []}
            choices = [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
                for i in range(n)
            ]
            usage = {**usage, "completion_tokens": n * len(words), "total_tokens": prompt_tokens + n * len(words)}
            return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage})
        return StreamingResponse(
            self._chat_chunks(body, head, words, finish_reason, usage), media_type="text/event-stream"
        )

    async def _chat_chunks(
        self, body: dict[str, Any], head: dict[str, Any], words: list[str], finish_reason: str, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, str], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            return _data({**head, "object": "chat.completion.chunk", "choices": [choice]})

        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            for index, word in enumerate(words):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if self.fail_after is not None and index == self.fail_after:
                    error = {"message": "engine crashed", "type": "InternalServerError", "param": None, "code": 500}
                    yield _data({"error": error})
                    finished = True
                    return
                yield chunk({"content": word}, finish_reason if index == len(words) - 1 else None)
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _data({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                self.cancelled += 1

    async def _completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if isinstance(body.get("prompt"), list) and not body.get("stream"):
            return self._batch(body)
        problem = self._problem(body)
        if problem is not None:
            error = {"object": "error", "message": problem, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse(error, status_code=400)
        words, finish_reason = self._generate(body)
        usage = {"prompt_tokens": len(body["prompt"].split()), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with_logprobs = body.get("logprobs") is not None
        if not body.get("stream"):
            choice = {
                "index": 0,
                "text": "".join(words),
                "logprobs": _logprobs(words, 0) if with_logprobs else None,
                "finish_reason": finish_reason,
            }
            return JSONResponse(
                {
                    "id": "cmpl-1",
                    "object": "text_completion",
                    "created": 0,
                    "model": "fake",
                    "choices": [choice],
                    "usage": usage,
                }
            )
        return StreamingResponse(self._chunks(body, words, finish_reason, usage), media_type="text/event-stream")

    async def _chunks(
        self, body: dict[str, Any], words: list[str], finish_reason: str, usage: dict[str, int]
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            for index, word in enumerate(words):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if self.fail_after is not None and index == self.fail_after:
                    error = {
                        "object": "error",
                        "message": "engine crashed",
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                    yield _data({"error": error})
                    finished = True
                    return
                choice = {
                    "index": 0,
                    "text": word,
                    "logprobs": _logprobs([word], index) if body.get("logprobs") is not None else None,
                    "finish_reason": finish_reason if index == len(words) - 1 else None,
                }
                yield _data(
                    {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "fake", "choices": [choice]}
                )
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _data(
                    {
                        "id": "cmpl-1",
                        "object": "text_completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [],
                        "usage": usage,
                    }
                )
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if not finished:
                self.cancelled += 1

    def _batch(self, body: dict[str, Any]) -> Response:
        """A list of prompts (and ``n``): vLLM answers prompt i's choice j at index i * n + j."""
        n = body.get("n", 1)
        words, finish_reason = self._generate(body)
        choices = [
            {"index": i * n + j, "text": "".join(words), "logprobs": None, "finish_reason": finish_reason}
            for i in range(len(body["prompt"]))
            for j in range(n)
        ]
        prompt_tokens = sum(len(prompt.split()) for prompt in body["prompt"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(choices) * len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": body["model"]}
        return JSONResponse({**head, "choices": choices, "usage": usage})


def _logprobs(words: list[str], start: int) -> dict[str, Any]:
    return {
        "tokens": words,
        "token_logprobs": [-((start + i) % 4 + 1) / 4 for i in range(len(words))],
        "top_logprobs": None,
        "text_offset": [0] * len(words),
    }


def _data(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


@contextlib.asynccontextmanager
async def running_fake_openai(**options: Any) -> AsyncIterator[FakeOpenAiServer]:
    server = FakeOpenAiServer(**options)
    async with serve_on_loopback(server.app()) as url:
        server.url = url
        yield server


@contextlib.asynccontextmanager
async def serving_llm(
    gateway: RunningGateway, framework: str, **options: Any
) -> AsyncIterator[InstantTgiServer | FakeOpenAiServer]:
    """Endpoint ``llm`` of ``framework``, served by a test server speaking its protocol (instant TGI, or the
    vLLM-like OpenAI one) started with ``options``."""
    server = running_instant_tgi if framework == "text_generation_inference" else running_fake_openai
    async with server(**options) as upstream:
        await gateway.add_endpoint("llm", [upstream.url], framework=framework)
        yield upstream
