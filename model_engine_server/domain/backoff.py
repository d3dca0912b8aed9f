"""Retry timing shared by everything that retries (async tasks, the Kubernetes API client)."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)], so clients that failed
    together do not retry together. ``attempt`` counts from 0."""
    return (rng or random).uniform(0.0, min(cap, base * 2**attempt))
