"""Expiring links to a fine-tuned model's files, for ``POST /v1/llm/model-endpoints/download``.

On S3 they are the store's own presigned URLs. With local object storage the gateway serves the files itself, behind
an HMAC signature over the object key and the expiry time, so the link works without credentials (as a presigned URL
does) and only until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from model_engine_server.domain.exceptions import NotFoundError
from model_engine_server.storage.port import ObjectStore
from model_engine_server.storage.s3 import S3ObjectStore

LINK_LIFETIME_SECONDS = 3600
ROUTE = "/v1/llm/model-files"


def _signature(secret: bytes, key: str, expires: int) -> str:
    return hmac.new(secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def download_url(store: ObjectStore, key: str, base_url: str, secret: bytes, now: float | None = None) -> str:
    if isinstance(store, S3ObjectStore):
        return store.presigned_url(key, LINK_LIFETIME_SECONDS)
    expires = int((now or time.time()) + LINK_LIFETIME_SECONDS)
    query = urlencode({"expires": expires, "signature": _signature(secret, key, expires)})
    return f"{base_url.rstrip('/')}{ROUTE}/{quote(key)}?{query}"


def check_link(key: str, expires: int, signature: str, secret: bytes, now: float | None = None) -> None:
    """A link that was not signed here, or has expired, is a 404: it reveals nothing about what exists."""
    valid = hmac.compare_digest(_signature(secret, key, expires), signature)
    if not valid or expires < (now or time.time()):
        raise NotFoundError("This download link is not valid or has expired; ask for a new one.")
