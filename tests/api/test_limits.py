"""Request limits against the real gateway process: oversized bodies, headers and queries, and a client that sends
its body too slowly, each refused with the documented status before any route runs."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from model_engine_server.testing.serving import running
from tests.processes import EngineProcess, gateway_process

BODY_LIMIT = 64 * 1024
BODY_TIMEOUT = 1.0
COMPLETION = "/v1/llm/completions-sync?model_endpoint_name=nope"


@pytest.fixture(scope="module")
def limited_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    gateway = gateway_process(
        tmp_path_factory.mktemp("limited-gateway"),
        max_request_body_bytes=str(BODY_LIMIT),
        request_body_timeout_seconds=str(BODY_TIMEOUT),
        max_request_header_bytes="4096",
        max_query_string_bytes="1024",
    )
    with running(gateway):
        yield gateway


def _post(gateway: EngineProcess, **kwargs: object) -> httpx.Response:
    return httpx.post(gateway.url + COMPLETION, auth=("alice", ""), timeout=10, **kwargs)  # type: ignore[arg-type]


def test_a_body_over_the_limit_is_413_whether_declared_or_chunked(limited_gateway: EngineProcess) -> None:
    big = {"prompt": "x" * BODY_LIMIT, "max_new_tokens": 1, "temperature": 0}
    declared = _post(limited_gateway, json=big)
    assert declared.status_code == 413
    assert declared.json() == {"detail": f"The request body is over the limit of {BODY_LIMIT} bytes."}

    def chunks() -> Iterator[bytes]:
        payload = orjson.dumps(big)
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    chunked = _post(limited_gateway, content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    # Just under the limit is read and reaches the route (an unknown endpoint here).
    small = _post(limited_gateway, json={"prompt": "x" * (BODY_LIMIT - 100), "max_new_tokens": 1, "temperature": 0})
    assert small.status_code == 404, small.text


def _send_and_stall(gateway: EngineProcess, head: str, start_of_body: bytes) -> tuple[bytes, float]:
    """Send a request head and the start of its body, then nothing; the answer, and how long it took to come."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head.encode() + start_of_body)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            received = client.recv(4096)
            if not received:
                break
            answer += received
        return answer, time.monotonic() - started


def test_a_client_sending_its_body_slowly_is_cut_off(limited_gateway: EngineProcess) -> None:
    head = f"POST {COMPLETION} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6\r\n"
    head += "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    answer, waited = _send_and_stall(limited_gateway, head, b'{"prompt": "')
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"not received within 1 seconds" in answer
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 3


def test_oversized_headers_and_queries_are_refused(limited_gateway: EngineProcess) -> None:
    headers = httpx.get(limited_gateway.url + "/healthz", headers={"x-filler": "y" * 5000}, timeout=10)
    assert headers.status_code == 431
    assert "at most 4096" in headers.json()["detail"]
    query = httpx.get(limited_gateway.url + "/v1/llm/model-endpoints", params={"name": "n" * 2000}, timeout=10)
    assert query.status_code == 414
    # Within the limits, the same requests are served.
    assert httpx.get(limited_gateway.url + "/healthz", timeout=10).status_code == 200


def test_a_repeated_query_parameter_is_refused_not_silently_dropped(limited_gateway: EngineProcess) -> None:
    url = limited_gateway.url + "/v1/llm/model-endpoints?name=a&name=b"
    response = httpx.get(url, auth=("team-a", ""), timeout=10)
    assert response.status_code == 400
    assert response.json()["detail"] == "Query parameter 'name' is given more than once; give it once."
    assert httpx.get(limited_gateway.url + "/v1/llm/model-endpoints?name=a", auth=("team-a", ""), timeout=10).is_success


def test_the_openai_routes_refuse_in_openais_envelope(limited_gateway: EngineProcess) -> None:
    big = {"model": "nope", "prompt": "x" * BODY_LIMIT, "max_tokens": 1}
    response = httpx.post(limited_gateway.url + "/v1/completions", json=big, auth=("alice", ""), timeout=10)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["message"] == f"The request body is over the limit of {BODY_LIMIT} bytes."
    assert error["type"] == "invalid_request_error"
    headers = httpx.get(limited_gateway.url + "/v1/models/x", headers={"x-filler": "y" * 5000}, timeout=10)
    assert headers.status_code == 431
    assert "at most 4096" in headers.json()["error"]["message"]


def test_a_file_upload_streams_past_the_body_limit_up_to_the_file_limit(limited_gateway: EngineProcess) -> None:
    content = b'{"prompt": "hi"}\n' * (4 * BODY_LIMIT // 17)  # four times the body limit; far below the file limit
    files = {"file": ("prompts.jsonl", content)}
    uploaded = httpx.post(limited_gateway.url + "/v1/files", files=files, auth=("alice", ""), timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    stored = httpx.get(f"{limited_gateway.url}/v1/files/{file_id}", auth=("alice", ""), timeout=10)
    assert stored.json()["size"] == len(content)


def test_an_upload_that_stalls_is_cut_off(limited_gateway: EngineProcess) -> None:
    boundary = "b0undary"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'.encode()
    head = "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6\r\n"
    head += f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 100000\r\n\r\n"
    answer, waited = _send_and_stall(limited_gateway, head, part + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"nothing arrived for 1 seconds" in answer
    assert BODY_TIMEOUT * 0.9 <= waited < BODY_TIMEOUT + 3
