"""Who is calling: the API key from HTTP Basic (key as username, empty password) or the ``x-api-key`` header,
exactly as the published ``scale-llm-engine`` client sends it, or ``Authorization: Bearer KEY`` as OpenAI clients
send it. The same key works every way, in both auth modes."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import HTTPConnection

from model_engine_server.config import AuthMode
from model_engine_server.domain.exceptions import AuthenticationError
from model_engine_server.domain.ports import ApiKeys

MAX_KEY_LENGTH = 128


def extract_api_key(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("x-api-key")
    if header:
        return header
    authorization = connection.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthenticationError("Malformed HTTP Basic credentials.") from None
        return decoded.partition(":")[0] or None
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    return None


async def authenticate(connection: HTTPConnection, mode: AuthMode, keys: ApiKeys) -> str:
    """The caller's owner (tenant) name; raises ``AuthenticationError`` for missing, unknown or revoked keys."""
    key = extract_api_key(connection)
    if not key:
        raise AuthenticationError(
            "Missing API key: send it as a Bearer token, the HTTP Basic username or the x-api-key header."
        )
    if len(key) > MAX_KEY_LENGTH:
        raise AuthenticationError("Invalid API key.")
    if mode is AuthMode.OPEN:
        return key  # open mode: every key is its own tenant (loopback only; see cli.gateway)
    owner = await keys.authenticate(key)
    if owner is None:
        raise AuthenticationError("Invalid or revoked API key.")
    return owner
