"""API key checks at cache speed: the registry is asked once per key per ``ttl``; a revocation reaches every
gateway through the change feed (``db/notifications.py``) well within a second, and the TTL bounds the damage of a
missed notification."""

from __future__ import annotations

import time
from collections.abc import Callable

from model_engine_server.db.models import utcnow
from model_engine_server.db.notifications import EVERYTHING
from model_engine_server.db.repositories import ApiKeyStore, KeyIdentity, hash_api_key
from model_engine_server.tenancy.cache import TtlCache

DEFAULT_TTL_SECONDS = 30.0


class KeyCache:
    def __init__(
        self, keys: ApiKeyStore, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = keys
        self._cache: TtlCache[str, KeyIdentity | None] = TtlCache(keys.identify, ttl, clock)

    async def identify(self, key: str) -> KeyIdentity | None:
        """Who ``key`` acts as; None when it is unknown, revoked or expired."""
        identity = await self._cache.get(hash_api_key(key))
        if identity is None or (identity.expires_at is not None and identity.expires_at <= utcnow()):
            return None
        return identity

    async def authenticate(self, key: str) -> str | None:
        """The owner of ``key`` (the ``ApiKeyStore.authenticate`` contract, from the cache)."""
        identity = await self.identify(key)
        return None if identity is None else identity.owner

    def forget_all(self) -> None:
        self._cache.clear()

    def on_change(self, payload: str) -> None:
        """A change-feed notification: ``key:<sha256>`` drops one key, ``*`` everything."""
        if payload == EVERYTHING:
            self.forget_all()
        elif payload.startswith("key:"):
            self._cache.invalidate(payload[4:])
