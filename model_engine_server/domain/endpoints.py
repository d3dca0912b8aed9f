"""Endpoint operations: validate a request against the rules and the zoo, then record it in the registry.

The gateway only records what is wanted; the reconciler makes the servers match (see DESIGN.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields, replace
from typing import Any

from model_engine_server.domain.entities import EndpointConfig, InferenceFramework, ModelEndpoint
from model_engine_server.domain.exceptions import InvalidRequestError
from model_engine_server.domain.fine_tuning import FineTunedModel
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import EndpointRepository
from model_engine_server.domain.rules import validate_endpoint_config, validate_endpoint_name

# Resource fields that default to the zoo entry's hardware when a create request leaves them out.
_ZOO_DEFAULTED = ("cpus", "gpus", "memory", "gpu_type")
_CONFIG_FIELDS = frozenset(f.name for f in fields(EndpointConfig))
# (owner, model name) -> that owner's fine-tuned model of that name, if any.
FineTunedModelLookup = Callable[[str, str], Awaitable[FineTunedModel | None]]


def parse_framework(value: str) -> InferenceFramework:
    try:
        return InferenceFramework(value)
    except ValueError:
        supported = ", ".join(f.value for f in InferenceFramework)
        raise InvalidRequestError(f"inference_framework {value!r} is not supported; use one of: {supported}.") from None


async def _no_quota(_owner: str) -> None:
    return None


class EndpointOperations:
    def __init__(
        self,
        registry: EndpointRepository,
        zoo: ModelZoo,
        on_change: Callable[[], None],
        check_quota: Callable[[str], Awaitable[None]] = _no_quota,
        *,
        fine_tuned_models: FineTunedModelLookup | None = None,
    ) -> None:
        self._registry = registry
        self._zoo = zoo
        self._on_change = on_change
        self._check_quota = check_quota  # raises RateLimitExceededError when the owner has max_endpoints already
        self._fine_tuned_models = fine_tuned_models

    async def create(self, owner: str, name: str, requested: dict[str, Any]) -> ModelEndpoint:
        """Create from the fields the caller gave; hardware the caller left out comes from the model zoo."""
        validate_endpoint_name(name)
        values = self._with_zoo_defaults(await self._with_fine_tuned_checkpoint(owner, requested))
        config = EndpointConfig(**values)
        validate_endpoint_config(config, self._zoo)
        await self._check_quota(owner)
        endpoint = await self._registry.create(owner=owner, name=name, config=config)
        self._on_change()
        return endpoint

    async def update(self, owner: str, name: str, changes: dict[str, Any]) -> ModelEndpoint:
        current = await self._registry.get_owned(name, owner)
        config = replace(current.config, **_known(changes))
        validate_endpoint_config(config, self._zoo)
        endpoint = await self._registry.update_config(name, owner, config)
        self._on_change()
        return endpoint

    async def delete(self, owner: str, name: str) -> ModelEndpoint:
        endpoint = await self._registry.mark_deleting(name, owner)
        self._on_change()
        return endpoint

    async def _with_fine_tuned_checkpoint(self, owner: str, requested: dict[str, Any]) -> dict[str, Any]:
        """A fine-tuned model of the owner's is served from its merged checkpoint, on its base model's hardware."""
        model_name = str(requested.get("model_name", ""))
        if requested.get("checkpoint_path") or self._zoo.get(model_name) or self._fine_tuned_models is None:
            return requested
        model = await self._fine_tuned_models(owner, model_name)
        if model is None:
            return requested
        return {**requested, "checkpoint_path": model.checkpoint_path, "_hardware_of": model.base_model}

    def _with_zoo_defaults(self, requested: dict[str, Any]) -> dict[str, Any]:
        values = _known(requested)
        entry = self._zoo.get(str(requested.get("_hardware_of") or values.get("model_name", "")))
        if entry is not None:
            for field_name in _ZOO_DEFAULTED:
                if values.get(field_name) is None:
                    values[field_name] = getattr(entry, field_name)
        return values


_NULLABLE = frozenset(
    {"quantize", "checkpoint_path", "gpu_type", "storage", "default_callback_url", "chat_template_override"}
)


def _known(values: dict[str, Any]) -> dict[str, Any]:
    if "inference_framework" in values and not isinstance(values["inference_framework"], InferenceFramework):
        values = {**values, "inference_framework": parse_framework(str(values["inference_framework"]))}
    # An explicit null only clears fields that may be empty; for the others it means "unchanged"/"default".
    return {
        key: value for key, value in values.items() if key in _CONFIG_FIELDS and (value is not None or key in _NULLABLE)
    }
