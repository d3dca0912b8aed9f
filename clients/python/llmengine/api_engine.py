"""Where the SDK sends requests, with which key, and through which HTTP client.

Values set here win over the environment (``LLM_ENGINE_BASE_PATH``, ``SCALE_API_KEY``), which is read on every
call, so changing the environment at run time works too. Function names match the published client.

``set_http_client`` / ``set_async_http_client`` hand the SDK your own ``httpx.Client`` / ``httpx.AsyncClient``
(proxies, TLS, connection limits, an ``httpx.MockTransport`` in tests); the SDK uses it as given and never closes it.
"""

from __future__ import annotations

import httpx

from llmengine import _constants
from llmengine._constants import DEFAULT_TIMEOUT
from llmengine._core.retry import RetryPolicy

__all__ = [
    "DEFAULT_TIMEOUT",
    "get_api_key",
    "get_base_path",
    "get_async_http_client",
    "get_http_client",
    "get_retry_policy",
    "set_async_http_client",
    "set_http_client",
    "set_api_key",
    "set_base_path",
    "set_retry_policy",
]

_base_path: str | None = None
_api_key: str | None = None
_retry_policy = RetryPolicy()
_http_client: httpx.Client | None = None
_async_http_client: httpx.AsyncClient | None = None


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


def set_http_client(client: httpx.Client | None) -> None:
    """Send every sync call through ``client``; None goes back to the SDK's own pooled client."""
    global _http_client
    _http_client = client


def get_http_client() -> httpx.Client | None:
    return _http_client


def set_async_http_client(client: httpx.AsyncClient | None) -> None:
    """Send every async call through ``client`` (use it on one event loop); None goes back to the SDK's own pools."""
    global _async_http_client
    _async_http_client = client


def get_async_http_client() -> httpx.AsyncClient | None:
    return _async_http_client
