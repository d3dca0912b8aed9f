"""The engine image serves the bundled model over the TGI protocol, read-only and non-root, seconds after it starts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest

from model_engine_server.testing import free_port
from model_engine_server.testing.peers import run_peer_script
from tests.containers.conftest import Images
from tests.containers.podman import Container

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(3600)]

TGI_CLIENT_SCRIPT = """
import json, os
from text_generation import Client

client = Client(os.environ["SERVER_URL"], timeout=60)
response = client.generate("The capital of France is", max_new_tokens=8)
streamed = list(client.generate_stream("The capital of France is", max_new_tokens=8))
print(json.dumps({"text": response.generated_text, "finish_reason": response.details.finish_reason.value,
                  "stream_text": "".join(r.token.text for r in streamed)}))
"""


@pytest.fixture(scope="module")
def engine(images: Images) -> Iterator[tuple[Container, str]]:
    """The engine image with the arguments the orchestrator gives built-in endpoint pods (its port moved off 8080)."""
    port = free_port()
    args = ["inference-server", "--model-id", "smollm2-135m", "--hostname", "127.0.0.1", "--port", str(port)]
    with images.podman.container(images.engine, *args) as container:
        url = f"http://127.0.0.1:{port}"
        container.wait_for(lambda: _healthy(url), timeout=120, what="GET /health to answer 200")
        yield container, url


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_engine_loads_the_model_converted_at_build_time(engine: tuple[Container, str]) -> None:
    container, _ = engine
    logs = container.logs()

    assert "Using the converted checkpoint /opt/llm-engine/models/smollm2-135m-" in logs
    assert "converting GGUF" not in logs


def test_engine_answers_generate_and_the_tgi_client(engine: tuple[Container, str]) -> None:
    _, url = engine
    answer = httpx.post(
        f"{url}/generate", json={"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8}}, timeout=60
    )
    result = run_peer_script(TGI_CLIENT_SCRIPT, env={**os.environ, "SERVER_URL": url}, timeout=600)

    assert answer.status_code == 200, answer.text
    assert answer.json()["generated_text"]
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["text"] == out["stream_text"] == answer.json()["generated_text"]
    assert out["finish_reason"] == "length"
