"""The short variant of ``benchmarks/load.py``: completions at concurrency 64 through the real gateway against the
instant server, none failing, and the gateway's memory back where it was after the run."""

from __future__ import annotations

from benchmarks.load import MAX_RSS_GROWTH_MB, run


def test_load_through_the_gateway_has_no_errors_and_no_leak() -> None:
    result = run(requests=3000, concurrency=64)
    assert result["requests"] == 3000
    assert result["errors"] == 0
    assert result["rss_growth_mb"] <= MAX_RSS_GROWTH_MB, result
