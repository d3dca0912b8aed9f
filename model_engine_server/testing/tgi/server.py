"""A tiny text-generation-inference (TGI) protocol server that answers instantly.

It stands in for a model server wherever the model itself is beside the point: the gateway-overhead benchmark (so
the gateway's own cost is visible), the async-task benchmark, the gateway's and the SDK's tests. It speaks TGI's
HTTP protocol (``POST /generate``, ``/generate_stream``, ``GET /health``, ``/info``, ``/metrics``, and TGI's OpenAI
routes from ``messages.py``), validates parameters like TGI (a wrong mapping shows up as a 422), and generates text:

- tokens are words of ``VOCABULARY`` in order, each preceded by a space; token i has log-prob ``-(i % 4 + 1) / 4``;
- a prompt counts one token per whitespace-separated word;
- generation stops after ``max_new_tokens``, when the text ends with a stop sequence (the sequence stays in the text,
  as in TGI), or — with ``eos_after=N`` — with a special ``</s>`` token after N tokens.

Knobs for tests (attributes; also command-line flags): ``token_delay`` between streamed tokens, ``fail_after`` (a
stream sends that many tokens and then TGI's in-band error event), ``max_concurrent`` (beyond it: 429 like TGI),
``record`` (keep every request body in ``requests``). ``cancelled`` counts streams whose client went away early;
``served`` counts answered requests (``tgi_request_success`` in ``/metrics``, as TGI names it).
It is written on asyncio and httptools directly (a framework would cost more than the gateway it measures). Run it
in-process with ``running_instant_tgi(...)`` or as a process: ``python -m model_engine_server.testing.tgi``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
import orjson

from model_engine_server.testing.serving import serving
from model_engine_server.testing.tgi.messages import OPENAI_PATHS as _OPENAI_PATHS
from model_engine_server.testing.tgi.messages import messages_api_answer, messages_api_problem

VOCABULARY = tuple("the quick brown fox jumps over a lazy dog while seven wizards quietly hex bright zebras".split())
EOS_TEXT = "</s>"
MAX_STOP_SEQUENCES = 4


@dataclass
class InstantTgiServer:
    host: str = "127.0.0.1"
    port: int = 0
    token_delay: float = 0.0
    fail_after: int | None = None
    eos_after: int | None = None
    max_concurrent: int | None = None
    max_total_tokens: int = 4096
    model_id: str = "instant-tgi"
    ready_at: float = 0.0  # time.monotonic() before which /health answers 503, like TGI loading a model
    record: bool = False
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cancelled: int = 0
    served: int = 0
    in_flight: int = 0
    _server: asyncio.Server | None = None
    _connections: set[_Connection] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            await self._server.wait_closed()
            self._server = None

    # --- generation -----------------------------------------------------------------------------------------------

    def validate(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """TGI's checks on the request; returns (status, error body) when it would refuse it."""
        if path in _OPENAI_PATHS:
            return messages_api_problem(path, body, self.max_total_tokens) or self._overloaded()
        inputs = body.get("inputs")
        parameters = body.get("parameters") or {}
        if not isinstance(inputs, str) or not isinstance(parameters, dict):
            return 422, {"error": "Failed to deserialize the JSON body", "error_type": "validation"}
        problem = _parameter_problem(parameters, streaming=path == "/generate_stream")
        if problem is None:
            prompt_tokens = len(inputs.split())
            max_new_tokens = parameters.get("max_new_tokens", 100)
            if prompt_tokens + max_new_tokens > self.max_total_tokens:
                problem = (
                    f"`inputs` tokens + `max_new_tokens` must be <= {self.max_total_tokens}. "
                    f"Given: {prompt_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
                )
        if problem is not None:
            return 422, {"error": problem, "error_type": "validation"}
        return self._overloaded()

    def _overloaded(self) -> tuple[int, dict[str, Any]] | None:
        if self.max_concurrent is not None and self.in_flight > self.max_concurrent:
            return 429, {"error": "Model is overloaded", "error_type": "overloaded"}
        return None

    def generate(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
        """(tokens, generated text, finish reason) for a valid request."""
        parameters = body.get("parameters") or {}
        stops = parameters.get("stop") or []
        tokens: list[dict[str, Any]] = []
        text = ""
        finish_reason = "length"
        for index in range(parameters.get("max_new_tokens", 100)):
            if self.eos_after is not None and index == self.eos_after:
                tokens.append({"id": 0, "text": EOS_TEXT, "logprob": -0.5, "special": True})
                finish_reason = "eos_token"
                break
            word = " " + VOCABULARY[index % len(VOCABULARY)]
            tokens.append(
                {"id": index % len(VOCABULARY) + 1, "text": word, "logprob": -(index % 4 + 1) / 4, "special": False}
            )
            text += word
            if any(text.endswith(stop) for stop in stops):
                finish_reason = "stop_sequence"
                break
        return tokens, text, finish_reason

    def generate_response(self, body: dict[str, Any]) -> dict[str, Any]:
        tokens, text, finish_reason = self.generate(body)
        parameters = body.get("parameters") or {}
        prefill = []
        if parameters.get("decoder_input_details"):
            prefill = [
                {"id": i, "text": word, "logprob": None if i == 0 else -1.0}
                for i, word in enumerate(body["inputs"].split())
            ]
        details = {
            "finish_reason": finish_reason,
            "generated_tokens": len(tokens),
            "seed": None,
            "prefill": prefill,
            "tokens": tokens,
            "top_tokens": None,
            "best_of_sequences": None,
        }
        return {"generated_text": text, "details": details if parameters.get("details") else None}

    def stream_events(self, body: dict[str, Any]) -> list[bytes]:
        tokens, text, finish_reason = self.generate(body)
        input_length = len(body["inputs"].split())
        events = []
        for index, token in enumerate(tokens):
            if self.fail_after is not None and index == self.fail_after:
                events.append(
                    _sse({"error": "Request failed during generation: simulated failure", "error_type": "generation"})
                )
                break
            last = index == len(tokens) - 1
            event = {
                "index": index + 1,
                "token": token,
                "top_tokens": None,
                "generated_text": text if last else None,
                "details": {
                    "finish_reason": finish_reason,
                    "generated_tokens": len(tokens),
                    "seed": None,
                    "input_length": input_length,
                }
                if last
                else None,
            }
            events.append(_sse(event))
        return events

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_dtype": "none",
            "model_device_type": "cpu",
            "max_concurrent_requests": self.max_concurrent or 128,
            "max_best_of": 1,
            "max_stop_sequences": MAX_STOP_SEQUENCES,
            "max_input_tokens": self.max_total_tokens - 1,
            "max_total_tokens": self.max_total_tokens,
            "version": "instant",
        }


def _parameter_problem(parameters: dict[str, Any], *, streaming: bool) -> str | None:
    temperature = parameters.get("temperature")
    if temperature is not None and temperature <= 0:
        return "`temperature` must be strictly positive"
    top_p = parameters.get("top_p")
    if top_p is not None and not 0 < top_p < 1:
        return "`top_p` must be > 0.0 and < 1.0"
    top_k = parameters.get("top_k")
    if top_k is not None and top_k <= 0:
        return "`top_k` must be strictly positive"
    frequency_penalty = parameters.get("frequency_penalty")
    if frequency_penalty is not None and not -2 <= frequency_penalty <= 2:
        return "`frequency_penalty` must be >= -2.0 and <= 2.0"
    max_new_tokens = parameters.get("max_new_tokens", 100)
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        return "`max_new_tokens` must be strictly positive"
    stop = parameters.get("stop") or []
    if len(stop) > MAX_STOP_SEQUENCES:
        return f"`stop` supports up to {MAX_STOP_SEQUENCES} stop sequences. Given: {len(stop)}"
    if streaming and parameters.get("decoder_input_details"):
        return "`decoder_input_details` == true is not supported when streaming tokens"
    unknown = set(parameters) - _KNOWN_PARAMETERS
    if unknown:
        return f"unknown parameters: {sorted(unknown)}"
    return None


_KNOWN_PARAMETERS = frozenset(
    {
        "best_of",
        "temperature",
        "repetition_penalty",
        "frequency_penalty",
        "top_k",
        "top_p",
        "typical_p",
        "do_sample",
        "max_new_tokens",
        "return_full_text",
        "stop",
        "truncate",
        "watermark",
        "details",
        "decoder_input_details",
        "seed",
        "top_n_tokens",
        "grammar",
        "adapter_id",
    }
)


def _sse(event: dict[str, Any]) -> bytes:
    return b"data:" + orjson.dumps(event) + b"\n\n"


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 422: b"Unprocessable Entity", 429: b"Too Many Requests"}.get(status, b"")
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (status, reason, content_type, len(body))
        + body
    )


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Connection(asyncio.Protocol):
    """One client connection: parses requests with httptools and answers them in order."""

    def __init__(self, server: InstantTgiServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._pending: list[tuple[str, str, bytes]] = []  # requests that arrived while a stream was running
        self._streaming: asyncio.Task[None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses
        self._server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_response(400, b'{"error":"bad request"}'))
            self._close()

    def connection_lost(self, _exc: Exception | None) -> None:
        self._transport = None
        self._server._connections.discard(self)
        if self._streaming is not None and not self._streaming.done():
            self._streaming.cancel()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode()
        path = self._url.decode().split("?", 1)[0]
        body = b"".join(self._body)
        self._url, self._body = b"", []
        if self._streaming is not None:
            self._pending.append((method, path, body))
        else:
            self._handle(method, path, body)

    # handling
    def _handle(self, method: str, path: str, raw: bytes) -> None:
        server = self._server
        if method == "GET" and path == "/health":
            loading = time.monotonic() < server.ready_at
            self._write(_response(503, b'{"error":"loading"}') if loading else _response(200, b""))
            return
        if method == "GET" and path == "/info":
            self._write(_response(200, orjson.dumps(server.info())))
            return
        if method == "GET" and path == "/metrics":  # TGI's load gauge (the local autoscaler reads it), its counter
            metrics = b"tgi_batch_current_size %d\ntgi_request_success %d\n" % (server.in_flight, server.served)
            self._write(_response(200, metrics, b"text/plain"))
            return
        if method != "POST" or path not in ("/generate", "/generate_stream", *_OPENAI_PATHS):
            self._write(_response(404, b'{"error":"not found"}'))
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._write(_response(422, b'{"error":"Failed to parse the request body","error_type":"validation"}'))
            return
        if server.record:
            server.requests.append((path, body))
        server.in_flight += 1
        refusal = server.validate(path, body) if isinstance(body, dict) else (422, {"error": "expected an object"})
        if refusal is not None:
            server.in_flight -= 1
            self._write(_response(refusal[0], orjson.dumps(refusal[1])))
            return
        if path in _OPENAI_PATHS:
            whole, events = messages_api_answer(server, path, body)
            if whole is not None:
                server.in_flight -= 1
                server.served += 1
                self._write(_response(200, whole))
                return
        elif path == "/generate":
            server.in_flight -= 1
            server.served += 1
            self._write(_response(200, orjson.dumps(server.generate_response(body))))
            return
        else:
            events = server.stream_events(body)
        if server.token_delay <= 0:
            server.in_flight -= 1
            server.served += 1
            self._write(_STREAM_HEAD + b"".join(_chunk(event) for event in events) + b"0\r\n\r\n")
            return
        self._streaming = asyncio.get_running_loop().create_task(self._stream_slowly(events))

    async def _stream_slowly(self, events: list[bytes]) -> None:
        server = self._server
        finished = False
        try:
            self._write(_STREAM_HEAD)
            for event in events:
                await asyncio.sleep(server.token_delay)
                if self._transport is None:
                    return
                self._write(_chunk(event))
            self._write(b"0\r\n\r\n")
            finished = True
        finally:
            server.in_flight -= 1
            if finished:
                server.served += 1
            else:
                server.cancelled += 1
            self._streaming = None
            if finished:
                self._drain_pending()

    def _drain_pending(self) -> None:
        while self._pending and self._streaming is None:
            self._handle(*self._pending.pop(0))

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def running_instant_tgi(**options: Any) -> contextlib.AbstractAsyncContextManager[InstantTgiServer]:
    """``async with running_instant_tgi(token_delay=0.01) as server: ... server.url ...``"""
    return serving(InstantTgiServer(**options))
