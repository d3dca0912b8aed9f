"""Names and labels of an endpoint's Kubernetes objects.

Every object of an endpoint (Deployment, Service, autoscaler, PDB) shares one name: ``llm-<slug>-<hash>``, where the
slug comes from the endpoint name and the hash from its id. It is a valid DNS-1035 label (so also a Service name), at
most 63 characters, stable across updates, and unique per endpoint even when two names slugify alike.
"""

from __future__ import annotations

import hashlib
import re

from model_engine_server.domain.entities import ModelEndpoint

MAX_NAME_LENGTH = 63
_PREFIX = "llm-"
_HASH_LENGTH = 8

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "llm-engine"
NAME_LABEL = "app.kubernetes.io/name"
NAME_VALUE = "llm-engine-endpoint"
INSTANCE_LABEL = "app.kubernetes.io/instance"
ENDPOINT_ID_LABEL = "llm-engine.io/endpoint-id"

ENDPOINT_ID_ANNOTATION = "llm-engine.io/endpoint-id"
ENDPOINT_NAME_ANNOTATION = "llm-engine.io/endpoint-name"
REVISION_ANNOTATION = "llm-engine.io/revision"

# What every watch selects on: objects this platform manages, and nothing else in the namespace.
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def resource_name(endpoint: ModelEndpoint) -> str:
    budget = MAX_NAME_LENGTH - len(_PREFIX) - 1 - _HASH_LENGTH
    slug = re.sub(r"[^a-z0-9]+", "-", endpoint.name.lower()).strip("-")[:budget].rstrip("-")
    suffix = _digest(endpoint.id)[:_HASH_LENGTH]
    return f"{_PREFIX}{slug}-{suffix}" if slug else f"{_PREFIX}{suffix}"


def endpoint_id_label(endpoint_id: str) -> str:
    """The id itself when it is a valid label value, else a digest of it (label values are restricted)."""
    if _LABEL_VALUE.match(endpoint_id):
        return endpoint_id
    return "h-" + _digest(endpoint_id)[:40]


def selector_labels(endpoint: ModelEndpoint) -> dict[str, str]:
    """The Deployment's immutable selector: only the endpoint id, so renames or updates never need a new one."""
    return {ENDPOINT_ID_LABEL: endpoint_id_label(endpoint.id)}


def common_labels(endpoint: ModelEndpoint) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        NAME_LABEL: NAME_VALUE,
        INSTANCE_LABEL: resource_name(endpoint),
        **selector_labels(endpoint),
    }
