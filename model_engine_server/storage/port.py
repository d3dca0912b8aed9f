"""The object-storage port: keys are ``/``-separated paths below the store's root; every write is atomic."""

from __future__ import annotations

from typing import BinaryIO, Protocol


class ObjectStoreError(Exception):
    """The store refused or could not serve a request (unreachable, invalid bucket name...); the message says why."""


class ObjectNotFoundError(ObjectStoreError):
    """No object under that key (or no permission to read it)."""


class ObjectStore(Protocol):
    """Blocking calls: async callers wrap them in ``asyncio.to_thread``.

    Implementations: ``storage.local.LocalObjectStore`` (a directory) and ``storage.s3.S3ObjectStore``.
    """

    @property
    def url(self) -> str:
        """Where the root is, as a URL (``file:///...`` or ``s3://bucket/prefix``)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``: readers see the old object or the whole new one, never a part."""

    def put_file(self, key: str, source: BinaryIO) -> int:
        """Store the rest of ``source`` under ``key`` atomically; returns the number of bytes stored."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ``ObjectNotFoundError`` when absent, ``ObjectStoreError`` when it cannot be read."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove the object (absent is fine)."""

    def list(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (a directory-like prefix ending in ``/``), sorted."""
