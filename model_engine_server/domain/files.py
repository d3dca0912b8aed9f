"""Files users upload (batch inputs, training data) and files jobs produce (batch outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class StoredFile:
    id: str  # file-<hex>
    owner: str
    filename: str
    size: int  # bytes
    location: str  # URI of the bytes: the platform's store, or a job's output path
    created_at: datetime
