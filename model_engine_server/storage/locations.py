"""Where objects live: the platform's own store (from settings) and the URIs users give (``s3://``, ``file://``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from model_engine_server.storage.local import LocalObjectStore
from model_engine_server.storage.port import ObjectStore


class UnsupportedLocationError(ValueError):
    """A URI this deployment cannot read or write; the message says which forms it accepts."""


@dataclass(frozen=True)
class StorageConfig:
    """The settings object storage needs, so that job processes can rebuild it from their environment."""

    url: str  # file:///abs/dir or s3://bucket/prefix
    s3_endpoint_url: str = ""
    s3_region: str = ""
    allow_local_paths: bool = True  # file:// user paths are readable only when jobs run on this machine


def build_object_store(config: StorageConfig) -> ObjectStore:
    store, prefix = _store_for(config.url, config)
    if isinstance(store, LocalObjectStore):
        return LocalObjectStore(store.root / prefix) if prefix else store
    from model_engine_server.storage.s3 import S3ObjectStore

    assert isinstance(store, S3ObjectStore)
    return S3ObjectStore(
        store.bucket, prefix, endpoint_url=config.s3_endpoint_url or None, region=config.s3_region or None
    )


def open_location(uri: str, config: StorageConfig) -> tuple[ObjectStore, str]:
    """The store holding ``uri`` and the object's key in it. Local paths only where ``allow_local_paths``."""
    if uri.startswith("file://") and not config.allow_local_paths and not uri.startswith(config.url + "/"):
        raise UnsupportedLocationError(
            f"{uri!r}: file:// paths are readable only when jobs run on this machine; use s3:// or a file id"
        )
    store, key = _store_for(uri, config)
    if not key:
        raise UnsupportedLocationError(f"{uri!r} names a bucket or directory, not an object")
    return store, key


def _store_for(uri: str, config: StorageConfig) -> tuple[ObjectStore, str]:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UnsupportedLocationError(f"{uri!r} has no bucket; write s3://bucket/key")
        from model_engine_server.storage.s3 import S3ObjectStore

        store = S3ObjectStore(
            parsed.netloc, endpoint_url=config.s3_endpoint_url or None, region=config.s3_region or None
        )
        return store, parsed.path.lstrip("/")
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedLocationError(f"{uri!r}: file:// URIs name a path on this machine (file:///path)")
        path = Path(unquote(parsed.path))
        return LocalObjectStore(Path(path.anchor or "/")), path.relative_to(path.anchor or "/").as_posix()
    raise UnsupportedLocationError(f"{uri!r}: use an s3://bucket/key URI, a file:///absolute/path, or a file id")
