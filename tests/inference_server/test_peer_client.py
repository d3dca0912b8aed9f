"""HF's own ``text-generation`` client (0.7.0, in its separate venv) works against the server unchanged."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from model_engine_server.testing.peers import run_peer_script
from tests.inference_server.conftest import RunningServer

pytestmark = pytest.mark.model

SCRIPT = """
import json, os
from text_generation import Client
from text_generation.errors import ValidationError

client = Client(os.environ["SERVER_URL"], timeout=60)
response = client.generate("The capital of France is", max_new_tokens=8)
streamed = list(client.generate_stream("The capital of France is", max_new_tokens=8))
seeded = [client.generate("Once upon a time", do_sample=True, seed=11, max_new_tokens=8).generated_text
          for _ in range(2)]
stopped = client.generate("The capital of France is", max_new_tokens=8, stop_sequences=["."])
try:
    client.generate("The capital of France is", max_new_tokens=100000)
    error = None
except ValidationError as exc:
    error = str(exc)
print(json.dumps({
    "text": response.generated_text,
    "finish_reason": response.details.finish_reason.value,
    "tokens": [t.text for t in response.details.tokens],
    "stream_text": "".join(r.token.text for r in streamed),
    "stream_final": streamed[-1].generated_text,
    "stream_details": streamed[-1].details.finish_reason.value,
    "seeded": seeded,
    "stopped": [stopped.generated_text, stopped.details.finish_reason.value],
    "validation_error": error,
}))
"""


def test_text_generation_client_generates_and_streams(server: RunningServer, client: httpx.Client) -> None:
    expected = client.post(
        "/generate", json={"inputs": "The capital of France is", "parameters": {"max_new_tokens": 8}}
    ).json()["generated_text"]

    result = run_peer_script(SCRIPT, env={**os.environ, "SERVER_URL": server.url}, timeout=600)

    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["text"] == expected == "".join(out["tokens"])
    assert out["finish_reason"] == "length"
    assert out["stream_text"] == out["stream_final"] == expected
    assert out["stream_details"] == "length"
    assert out["seeded"][0] == out["seeded"][1]
    assert out["stopped"][1] == "stop_sequence" and out["stopped"][0].endswith(".")
    assert "must be <=" in out["validation_error"]
