"""The ``model-engine`` command line, run as an operator would (a real process, real SQLite/PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_ENGINE = [sys.executable, "-m", "model_engine_server"]


def run(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*MODEL_ENGINE, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"LLM_ENGINE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}


def test_help_lists_the_commands(env: dict[str, str]) -> None:
    output = run("--help", env=env).stdout
    for command in ("migrate", "gateway", "keys", "endpoints"):
        assert command in output


def test_migrate_then_keys_create_list_revoke(env: dict[str, str], tmp_path: Path) -> None:
    assert "up to date" in run("migrate", env=env).stdout
    assert (tmp_path / "registry.db").exists()

    created = run("keys", "create", "--owner", "team-a", "--description", "ci", env=env).stdout
    key = created.strip().splitlines()[-1]
    assert key.startswith("llme_")

    listing = run("keys", "list", env=env).stdout
    assert "team-a" in listing
    assert key not in listing  # only a prefix is ever shown
    key_id = next(word for word in listing.split() if word.startswith("key_"))

    assert "Revoked" in run("keys", "revoke", key_id, env=env).stdout
    assert "not found" in run("keys", "revoke", "key_missing", env=env, check=False).stdout


def test_endpoints_list_on_an_empty_registry(env: dict[str, str]) -> None:
    run("migrate", env=env)
    assert "name" in run("endpoints", "list", env=env).stdout


def test_gateway_refuses_open_auth_on_a_public_address(env: dict[str, str]) -> None:
    result = run("gateway", "--host", "0.0.0.0", env={**env, "LLM_ENGINE_AUTH_MODE": "open"}, check=False)
    assert result.returncode == 2
    assert "only allowed on a loopback address" in result.stdout


def test_invalid_settings_are_reported_not_raised(env: dict[str, str]) -> None:
    result = run("endpoints", "list", env={**env, "LLM_ENGINE_AUTH_MODE": "sometimes"}, check=False)
    assert result.returncode == 2
    assert "auth_mode" in result.stdout


def test_keys_list_prints_whole_ids_in_a_narrow_pipe_and_json(env: dict[str, str]) -> None:
    run("migrate", env=env)
    run(
        "keys", "create", "--owner", "team-with-a-long-name", "--label", "deploy bot", "--expires-in-days", "1", env=env
    )
    narrow = env | {"COLUMNS": "40"}
    listing = run("keys", "list", env=narrow).stdout
    [record] = json.loads(run("keys", "list", "--json", env=narrow).stdout)
    assert record["id"] in listing.split()  # whole, copyable into `keys revoke`
    assert record["owner"] == "team-with-a-long-name" and record["label"] == "deploy bot" and record["expires_at"]
    assert record["revoked_at"] is None  # JSON null, not an empty string, for scripts
    assert "Revoked" in run("keys", "revoke", record["id"], env=env).stdout
    assert json.loads(run("keys", "list", "--json", env=env).stdout)[0]["revoked_at"]


def test_tenants_set_limits_and_show(env: dict[str, str]) -> None:
    run("migrate", env=env)
    env = env | {"LLM_ENGINE_TENANT_REQUESTS_PER_MINUTE": "600"}
    shown = run("tenants", "set-limits", "team-a", "--tokens-per-minute", "5000", "--priority", "2", env=env).stdout
    assert "tokens_per_minute" in shown and "5000" in shown
    shown = run("tenants", "show", "team-a", env=env).stdout
    lines = {line.split()[0]: line.split()[1:] for line in shown.splitlines() if line.startswith("  ")}
    assert lines["requests_per_minute"] == ["600", "(default)"]
    assert lines["tokens_per_minute"] == ["5000", "(override)"]
    assert lines["priority"] == ["2", "(override)"]
    reset = run("tenants", "set-limits", "team-a", "--reset", env=env).stdout
    assert "(override)" not in reset
