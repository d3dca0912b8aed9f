"""Object storage in a local directory (the embedded default: ``<data_dir>/objects``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from model_engine_server.storage.port import ObjectNotFoundError

_TEMP_PREFIX = ".partial-"  # in-progress writes; never listed, never read


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"object key {key!r} leaves the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda handle: handle.write(data))

    def put_file(self, key: str, source: BinaryIO) -> int:
        return self._write(key, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> int:
        """Write to a temporary file next to the target, fsync, then rename over it: all or nothing."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                size = handle.tell()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return size

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise ObjectNotFoundError(key) from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        return sorted(
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not path.name.startswith(_TEMP_PREFIX)
        )
