"""API keys with checks at cache speed: the registry is asked once per key per ``ttl``; a revocation reaches every
gateway through the change feed (``db/notifications.py``) well within a second, and the TTL bounds the damage of a
missed notification. Everything else (create, list, revoke) goes straight to the registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from model_engine_server.db.models import utcnow
from model_engine_server.db.notifications import EVERYTHING
from model_engine_server.db.repositories import hash_api_key
from model_engine_server.domain.entities import ApiKey, KeyIdentity
from model_engine_server.domain.ports import ApiKeys
from model_engine_server.domain.ttl_cache import TtlCache

DEFAULT_TTL_SECONDS = 30.0


class KeyCache:
    """An ``ApiKeys`` whose ``authenticate`` and ``identify`` are cached."""

    def __init__(
        self, keys: ApiKeys, ttl: float = DEFAULT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._keys = keys
        self._cache: TtlCache[str, KeyIdentity | None] = TtlCache(keys.identify, ttl, clock)

    async def identify_key(self, key: str) -> KeyIdentity | None:
        """Who ``key`` acts as; None when it is unknown, revoked or expired."""
        identity = await self.identify(hash_api_key(key))
        if identity is None or (identity.expires_at is not None and identity.expires_at <= utcnow()):
            return None
        return identity

    async def identify(self, key_hash: str) -> KeyIdentity | None:
        return await self._cache.get(key_hash)

    async def authenticate(self, key: str) -> str | None:
        identity = await self.identify_key(key)
        return None if identity is None else identity.owner

    async def store(
        self, key: str, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> ApiKey:
        record = await self._keys.store(key, owner, description, admin=admin, expires_at=expires_at)
        self._cache.invalidate(hash_api_key(key))
        return record

    async def create(
        self, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        return await self._keys.create(owner, description, admin=admin, expires_at=expires_at)

    async def list(self, owner: str | None = None) -> list[ApiKey]:
        return await self._keys.list(owner)

    async def revoke(self, key_id: str, owner: str | None = None) -> ApiKey:
        record = await self._keys.revoke(key_id, owner)
        self.forget_all()  # this process at once (the record has no hash); the others through the change feed
        return record

    def forget_all(self) -> None:
        self._cache.clear()

    def on_change(self, payload: str) -> None:
        """A change-feed notification: ``key:<sha256>`` drops one key, ``*`` everything."""
        if payload == EVERYTHING:
            self.forget_all()
        elif payload.startswith("key:"):
            self._cache.invalidate(payload[4:])
