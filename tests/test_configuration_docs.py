"""docs/configuration.md lists every setting of ``Settings`` — one row each — and nothing that is not one."""

from __future__ import annotations

import re
from pathlib import Path

from model_engine_server.config import ENV_PREFIX, Settings

CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(LLM_ENGINE_[A-Z0-9_]+)` \|", re.MULTILINE)


def documented_rows() -> list[str]:
    return ROW.findall(CONFIGURATION.read_text())


def test_every_setting_has_a_row() -> None:
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    missing = settings - set(documented_rows())
    assert not missing, f"add a row to docs/configuration.md for: {sorted(missing)}"


def test_every_row_is_a_setting_and_appears_once() -> None:
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    rows = documented_rows()
    assert not set(rows) - settings, f"docs/configuration.md lists settings that do not exist: {set(rows) - settings}"
    assert len(rows) == len(set(rows)), "a setting has two rows in docs/configuration.md"


def test_documented_defaults_match_the_settings_class() -> None:
    # Scalar defaults are quoted in the default column; a changed default must change the docs with it.
    table = {name: line for line in CONFIGURATION.read_text().splitlines() for name in ROW.findall(line + "\n")}
    wrong = []
    for field, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, bool):
            expected = str(default).lower()
        elif isinstance(default, int | float) or (isinstance(default, str) and default):
            expected = f"{default:g}" if isinstance(default, float) else str(default)
        else:
            continue
        cell = table[ENV_PREFIX + field.upper()].split("|")[2]
        if f"`{expected}`" not in cell and "queued" not in cell:
            wrong.append(f"{ENV_PREFIX + field.upper()}: docs say {cell.strip()}, the default is {expected!r}")
    assert not wrong, "\n".join(wrong)
