"""docs/tenancy.md, step by step, as an operator runs it: a keys-mode gateway process, the CLI, and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.tenancy.processes import start_gateways

ADMIN_KEY = "llme_walkthrough-admin-key-0123456789"
MODEL_ENGINE = [sys.executable, "-m", "model_engine_server"]


def cli(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([*MODEL_ENGINE, *args], env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def test_create_a_key_set_limits_see_a_429_revoke_read_usage(tmp_path: Path) -> None:
    env = os.environ | {
        "LLM_ENGINE_DATA_DIR": str(tmp_path),
        "LLM_ENGINE_AUTH_MODE": "keys",
        "LLM_ENGINE_BOOTSTRAP_API_KEY": ADMIN_KEY,
    }
    cli("migrate", env=env)
    with start_gateways(1, env) as [url]:
        # Create keys: one with the CLI, one through the API.
        cli_key = cli("keys", "create", "--owner", "team-b", "--label", "batch team", env=env).strip().splitlines()[-1]
        created = httpx.post(
            f"{url}/v1/api-keys", json={"owner": "team-a", "label": "search team"}, auth=(ADMIN_KEY, "")
        )
        assert created.status_code == 200
        team_a_key = created.json()["key"]
        listed = json.loads(cli("keys", "list", "--json", env=env))
        assert {k["owner"] for k in listed} == {"admin", "team-a", "team-b"}

        # Set a tenant's limits, then see a 429.
        limits = httpx.put(f"{url}/v1/tenants/team-a/limits", json={"requests_per_minute": 2}, auth=(ADMIN_KEY, ""))
        assert limits.json()["effective"]["requests_per_minute"] == 2
        codes = [httpx.get(f"{url}/v1/llm/model-endpoints", auth=(team_a_key, "")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = httpx.get(f"{url}/v1/llm/model-endpoints", auth=(team_a_key, ""))
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["detail"] == (
            "Rate limit exceeded: requests_per_minute (2 requests per minute) for tenant 'team-a'."
        )
        assert httpx.get(f"{url}/v1/llm/model-endpoints", auth=(cli_key, "")).status_code == 200

        # Revoke the CLI-made key with the CLI: the gateway refuses it within a second.
        key_id = next(k["id"] for k in listed if k["owner"] == "team-b")
        cli("keys", "revoke", key_id, env=env)
        deadline = time.monotonic() + 1.0
        while httpx.get(f"{url}/v1/llm/model-endpoints", auth=(cli_key, "")).status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.02)

        usage = httpx.get(f"{url}/v1/usage", params={"start": "2026-11-01"}, auth=(ADMIN_KEY, ""))
        assert usage.status_code == 200 and usage.json()["usage"] == []
