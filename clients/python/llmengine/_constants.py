"""Timeouts, retries and polling: the SDK's network policy, named in one place.

Every number the transport uses lives here, so changing how patient or how persistent the SDK is never means
hunting through the I/O code.
"""

from __future__ import annotations

import os

DEFAULT_BASE_PATH = "http://127.0.0.1:5000"
BASE_PATH_ENV = "LLM_ENGINE_BASE_PATH"
API_KEY_ENV = "SCALE_API_KEY"
# The published client sends this key when none is configured; a gateway in open mode treats it as a tenant.
FALLBACK_API_KEY = "root"

# Seconds. `timeout` arguments bound each read (and, for streams, the gap between two events); connecting gets
# its own, shorter bound so an unreachable gateway fails fast even when a long generation is allowed.
DEFAULT_TIMEOUT = 10
COMPLETION_TIMEOUT = 10
CONNECT_TIMEOUT = 5.0

# Retries: statuses that mean "the server did not do it, try again later".
RETRYABLE_STATUSES = frozenset({429, 503})
MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
RETRY_MULTIPLIER = 2.0
RETRY_JITTER = 0.25  # each delay is scaled by a random factor in [1 - jitter, 1 + jitter]

# Polling an async task: start quick (most tasks on a warm endpoint finish fast), back off to a gentle ceiling.
POLL_INITIAL_INTERVAL = 0.05
POLL_MULTIPLIER = 1.5
POLL_MAX_INTERVAL = 2.0


def env_base_path() -> str:
    return os.environ.get(BASE_PATH_ENV) or DEFAULT_BASE_PATH


def env_api_key() -> str | None:
    return os.environ.get(API_KEY_ENV) or None
