"""Rules about endpoints: what a name, label, quantity or worker count may be, and when an endpoint takes traffic.

The validation rules raise ``InvalidRequestError`` with a message that says exactly what is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from model_engine_server.domain.entities import EndpointConfig, EndpointStatus, ModelEndpoint
from model_engine_server.domain.exceptions import EndpointDeletingError, InvalidRequestError
from model_engine_server.domain.model_zoo import ModelZoo

MAX_NAME_LENGTH = 63
MAX_LABELS = 32
MAX_WORKERS_CAP = 1000
# Values the published client can parse back; anything else would break its responses.
QUANTIZATIONS = frozenset({"bitsandbytes", "awq"})
GPU_TYPES = frozenset(
    {
        "nvidia-tesla-t4",
        "nvidia-ampere-a10",
        "nvidia-ampere-a100",
        "nvidia-ampere-a100e",
        "nvidia-hopper-h100",
        "nvidia-hopper-h100-1g20gb",
        "nvidia-hopper-h100-3g40gb",
    }
)

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
IMAGE_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_DNS_LABEL = re.compile(NAME_PATTERN)
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
_IMAGE_TAG = re.compile(IMAGE_TAG_PATTERN)


# Names that are also fixed paths below /v1/llm/model-endpoints/.
RESERVED_NAMES = frozenset({"download"})


def validate_endpoint_name(name: str) -> None:
    if name in RESERVED_NAMES:
        raise InvalidRequestError(f"name {name!r} is reserved (it is a path of the API); choose another.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequestError(f"name must be at most {MAX_NAME_LENGTH} characters, got {len(name)}.")
    if not _DNS_LABEL.match(name):
        raise InvalidRequestError(
            f"name {name!r} is not valid: use lower-case letters, digits and '-', starting and ending with a "
            "letter or digit (it becomes a Kubernetes object name)."
        )


def validate_labels(labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidRequestError(f"at most {MAX_LABELS} labels are allowed, got {len(labels)}.")
    for key, value in labels.items():
        prefix, _, label_name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
            raise InvalidRequestError(f"label key {key!r} has an invalid prefix.")
        if len(label_name) > 63 or not _LABEL_NAME.match(label_name):
            raise InvalidRequestError(
                f"label key {key!r} is not valid: at most 63 characters of letters, digits, '-', '_' and '.'."
            )
        if len(value) > 63 or (value and not _LABEL_NAME.match(value)):
            raise InvalidRequestError(
                f"label value for {key!r} is not valid: at most 63 characters of letters, digits, '-', '_' and '.'."
            )


def validate_quantity(field_name: str, value: str) -> None:
    if not _QUANTITY.match(value):
        raise InvalidRequestError(
            f"{field_name} {value!r} is not a Kubernetes quantity (for example '4', '500m', '16Gi')."
        )


def validate_workers(min_workers: int, max_workers: int, per_worker: int) -> None:
    if min_workers < 0:
        raise InvalidRequestError(f"min_workers must be >= 0, got {min_workers}.")
    if max_workers < 1:
        raise InvalidRequestError(f"max_workers must be >= 1, got {max_workers}.")
    if max_workers > MAX_WORKERS_CAP:
        raise InvalidRequestError(f"max_workers must be <= {MAX_WORKERS_CAP}, got {max_workers}.")
    if min_workers > max_workers:
        raise InvalidRequestError(f"min_workers ({min_workers}) must not exceed max_workers ({max_workers}).")
    if per_worker < 1:
        raise InvalidRequestError(f"per_worker must be >= 1, got {per_worker}.")


def validate_endpoint_config(config: EndpointConfig, zoo: ModelZoo) -> None:
    """Check a whole config; called on create and on every update (with the merged result)."""
    if config.checkpoint_path is None:
        zoo.require(config.model_name)
    elif not config.checkpoint_path.strip():
        raise InvalidRequestError("checkpoint_path must not be empty.")
    validate_workers(config.min_workers, config.max_workers, config.per_worker)
    validate_labels(config.labels)
    validate_quantity("cpus", config.cpus)
    validate_quantity("memory", config.memory)
    if config.storage is not None:
        validate_quantity("storage", config.storage)
    if config.gpus < 0:
        raise InvalidRequestError(f"gpus must be >= 0, got {config.gpus}.")
    if config.num_shards < 1:
        raise InvalidRequestError(f"num_shards must be >= 1, got {config.num_shards}.")
    if config.gpus > 0 and config.num_shards > config.gpus:
        raise InvalidRequestError(f"num_shards ({config.num_shards}) cannot exceed gpus ({config.gpus}).")
    if config.nodes_per_worker < 1:
        raise InvalidRequestError(f"nodes_per_worker must be >= 1, got {config.nodes_per_worker}.")
    if config.gpu_type is not None and config.gpu_type not in GPU_TYPES:
        raise InvalidRequestError(f"gpu_type {config.gpu_type!r} is not one of {', '.join(sorted(GPU_TYPES))}.")
    if config.quantize is not None and config.quantize not in QUANTIZATIONS:
        raise InvalidRequestError(f"quantize {config.quantize!r} is not one of {', '.join(sorted(QUANTIZATIONS))}.")
    if not _IMAGE_TAG.match(config.inference_framework_image_tag):
        tag = config.inference_framework_image_tag
        raise InvalidRequestError(f"inference_framework_image_tag {tag!r} is not a valid image tag.")


def is_loopback_host(host: str) -> bool:
    """True when binding to ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_not_deleting(endpoint: ModelEndpoint) -> None:
    if endpoint.status is EndpointStatus.DELETE_IN_PROGRESS:
        raise EndpointDeletingError(endpoint.name)


def status_reason_suffix(endpoint: ModelEndpoint) -> str:
    """``": <reason>"`` when the endpoint's status has a reason, else nothing: the tail of a not-ready message."""
    return f": {endpoint.status_reason}" if endpoint.status_reason else ""
