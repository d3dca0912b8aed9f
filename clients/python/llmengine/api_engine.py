"""Where the SDK sends requests and with which key.

Values set here win over the environment (``LLM_ENGINE_BASE_PATH``, ``SCALE_API_KEY``), which is read on every
call, so changing the environment at run time works too. Function names match the published client.
"""

from __future__ import annotations

from llmengine import _constants
from llmengine._constants import DEFAULT_TIMEOUT
from llmengine._core.retry import RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT",
    "get_api_key",
    "get_base_path",
    "get_retry_policy",
    "set_api_key",
    "set_base_path",
    "set_retry_policy",
]

_base_path: str | None = None
_api_key: str | None = None
_retry_policy = RetryPolicy()


def set_base_path(path: str | None) -> None:
    """Use ``path`` (e.g. ``http://gateway:5000``) instead of ``LLM_ENGINE_BASE_PATH``; None goes back to it."""
    global _base_path
    _base_path = path


def get_base_path() -> str:
    return _base_path if _base_path is not None else _constants.env_base_path()


def set_api_key(key: str | None) -> None:
    """Use ``key`` instead of ``SCALE_API_KEY``; None goes back to the environment."""
    global _api_key
    _api_key = key


def get_api_key() -> str:
    if _api_key is not None:
        return _api_key
    # Like the published client: without a key, send "root" (a tenant of its own on an open-mode gateway).
    return _constants.env_api_key() or _constants.FALLBACK_API_KEY


def set_retry_policy(policy: RetryPolicy) -> None:
    """Replace the retry policy for every later call (``RetryPolicy(max_retries=0)`` turns retries off)."""
    global _retry_policy
    _retry_policy = policy


def get_retry_policy() -> RetryPolicy:
    return _retry_policy
