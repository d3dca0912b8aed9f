"""Schemathesis against a running gateway, over every route of its OpenAPI document, with every check enabled.

It catches answers the document does not declare (statuses, content types, headers, bodies), schema-valid requests
the server refuses, invalid ones it accepts, 5xx, wrong ``Allow`` headers and ignored authentication. Routes added
later join the run by being in the document. A failure prints the seed; replay it with
``LLM_ENGINE_FUZZ_SEED=<seed> pytest tests/api/test_openapi_fuzzing.py``.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_engine_server.testing.serving import running
from tests.processes import EngineProcess, gateway_process

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
MIN_CASES = 2000
DEFAULT_SEED = 20261129
EXAMPLES_PER_OPERATION = 40  # with the coverage phase, ~2,300 cases over the 18 routes of the document

# Rules across fields that JSON Schema cannot state (min_workers <= max_workers, num_shards <= gpus, a model from the
# zoo unless checkpoint_path is given, label keys): a schema-valid endpoint body may still break one of them, and the
# answer is then a 400 naming the rule. Every other operation must accept every schema-valid request.
CONFIG = """
[[operations]]
include-path-regex = "^/v1/llm/model-endpoints"
include-method-regex = "^(POST|PUT)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "404", "409"]

# Deleting an endpoint is asynchronous by design (DESIGN.md): DELETE answers {"deleted": true} at once and the
# endpoint reads back as DELETE_IN_PROGRESS until the reconciler has removed its servers (the published client
# relies on that status). Reading it right after the DELETE is therefore not a use after free.
[[operations]]
include-path-regex = "^/v1/llm/model-endpoints"
include-method-regex = "^GET$"
checks.use_after_free.enabled = false
"""


@pytest.fixture(scope="module")
def keyed_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngineProcess, str]]:
    key = f"sk-fuzz-{uuid.uuid4().hex}"
    gateway = gateway_process(
        tmp_path_factory.mktemp("fuzzed-gateway"), auth_mode="keys", bootstrap_api_key=key, bootstrap_owner="fuzz"
    )
    with running(gateway):
        yield gateway, key


def test_every_route_honours_its_openapi_document(
    keyed_gateway: tuple[EngineProcess, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, key = keyed_gateway
    # A fixed seed keeps CI deterministic; LLM_ENGINE_FUZZ_SEED=random explores new cases (and prints the seed).
    chosen = os.environ.get("LLM_ENGINE_FUZZ_SEED", str(DEFAULT_SEED))
    seed = random.randrange(2**32) if chosen == "random" else int(chosen)
    with capsys.disabled():
        print(f"\nschemathesis seed: {seed} (replay: LLM_ENGINE_FUZZ_SEED={seed})")  # noqa: T201 - shown on success too
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        "all",
        "--auth",
        f"{key}:",
        "--seed",
        str(seed),
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--workers",
        "1",
        "--request-timeout",
        "10",
    ]
    # In tmp_path: schemathesis keeps a cache of what it found in its working directory.
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"seed {seed}\n{report[-12000:]}\n--- gateway log ---\n{gateway.log_tail()}"
    generated = re.search(r"(\d+) generated", report)
    assert generated is not None, report[-3000:]
    with capsys.disabled():
        print(f"schemathesis: {generated.group(1)} cases, seed {seed}")  # noqa: T201
    assert int(generated.group(1)) >= MIN_CASES, report[-3000:]
    assert "Selected: " in report and "Tested: " in report
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    assert selected is not None and selected.group(1) == selected.group(2), "every operation is fuzzed"
