"""Request and response bodies of the endpoint API, field for field as the published client sends and parses them."""

from __future__ import annotations

from dataclasses import asdict, fields
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from model_engine_server.domain import rules
from model_engine_server.domain.entities import EndpointStatus, InferenceFramework, ModelEndpoint

Quantity = str | int | float
# Every endpoint serves sync, streaming and async requests alike, so `endpoint_type` is accepted (and checked) for
# compatibility but always reads back as "streaming": the published client cannot parse any other value.
EVERY_ENDPOINT_TYPE = "streaming"


# The rules domain/rules.py enforces, stated in the OpenAPI document too so that generated clients and fuzzers agree
# with the server. The server's checks (and their messages) stay in the domain; rules across fields (min_workers <=
# max_workers, num_shards <= gpus, a zoo model unless checkpoint_path is given) cannot be stated in JSON Schema.
NAME_RULE = Field(json_schema_extra={"pattern": rules.NAME_PATTERN, "maxLength": rules.MAX_NAME_LENGTH})
FRAMEWORK_RULE: JsonDict = {"enum": [framework.value for framework in InferenceFramework]}
TAG_RULE: JsonDict = {"pattern": rules.IMAGE_TAG_PATTERN}
QUANTIZE_RULE: JsonDict = {"enum": [*sorted(rules.QUANTIZATIONS), None]}
GPU_TYPE_RULE: JsonDict = {"enum": [*sorted(rules.GPU_TYPES), None]}
LABELS_RULE: JsonDict = {"maxProperties": rules.MAX_LABELS}
# cpus, memory, storage: a Kubernetes quantity, as a string or a plain number (the published client sends both).
QUANTITY_RULE: JsonDict = {
    "anyOf": [{"type": "string", "pattern": rules.QUANTITY_PATTERN}, {"type": "number", "minimum": 0}, {"type": "null"}]
}


def _at_least(minimum: int, maximum: int | None = None) -> JsonDict:
    rule: JsonDict = {"minimum": minimum}
    if maximum is not None:
        rule["maximum"] = maximum
    return rule


def _quantity_to_str(value: Quantity | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


CHAT_TEMPLATE_MAX_CHARS = 65_536


class _Request(BaseModel):
    # Unknown fields are ignored so newer clients keep working against this server. Strict: JSON types as the
    # document states them (no "5" for 5, no 0 for false); quantities are normalised to strings before the check.
    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("cpus", "memory", "storage", mode="before", check_fields=False)
    @classmethod
    def _normalise_quantity(cls, value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float | None):
            raise ValueError("must be a quantity such as 4, '500m' or '16Gi'")
        return _quantity_to_str(value)


class CreateEndpointRequest(_Request):
    name: str = NAME_RULE
    model_name: str
    source: Literal["hugging_face"] = "hugging_face"
    inference_framework: str = Field("text_generation_inference", json_schema_extra=FRAMEWORK_RULE)
    inference_framework_image_tag: str = Field("latest", json_schema_extra=TAG_RULE)
    num_shards: int = Field(1, json_schema_extra=_at_least(1))
    quantize: str | None = Field(None, json_schema_extra=QUANTIZE_RULE)
    checkpoint_path: str | None = None
    endpoint_type: Literal["streaming", "sync", "async"] = "streaming"
    cpus: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    gpus: int | None = Field(None, json_schema_extra=_at_least(0))
    memory: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    gpu_type: str | None = Field(None, json_schema_extra=GPU_TYPE_RULE)
    storage: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    nodes_per_worker: int = Field(1, json_schema_extra=_at_least(1))
    min_workers: int = Field(1, json_schema_extra=_at_least(0, rules.MAX_WORKERS_CAP))
    max_workers: int = Field(1, json_schema_extra=_at_least(1, rules.MAX_WORKERS_CAP))
    per_worker: int = Field(10, json_schema_extra=_at_least(1))
    labels: dict[str, str] = Field(default_factory=dict, json_schema_extra=LABELS_RULE)
    metadata: dict[str, Any] = Field(default_factory=dict)
    public_inference: bool = False
    high_priority: bool = False
    post_inference_hooks: list[str] | None = None
    default_callback_url: str | None = None
    chat_template_override: str | None = Field(default=None, max_length=CHAT_TEMPLATE_MAX_CHARS)

    def config_fields(self) -> dict[str, Any]:
        values = self.model_dump(exclude={"name"})
        values["post_inference_hooks"] = values["post_inference_hooks"] or []
        values["endpoint_type"] = EVERY_ENDPOINT_TYPE
        return values


class UpdateEndpointRequest(_Request):
    """Every field optional: only the fields sent change."""

    model_name: str | None = None
    source: Literal["hugging_face"] | None = None
    inference_framework: str | None = Field(None, json_schema_extra=FRAMEWORK_RULE)
    inference_framework_image_tag: str | None = Field(None, json_schema_extra=TAG_RULE)
    num_shards: int | None = Field(None, json_schema_extra=_at_least(1))
    quantize: str | None = Field(None, json_schema_extra=QUANTIZE_RULE)
    checkpoint_path: str | None = None
    endpoint_type: Literal["streaming", "sync", "async"] | None = None
    cpus: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    gpus: int | None = Field(None, json_schema_extra=_at_least(0))
    memory: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    gpu_type: str | None = Field(None, json_schema_extra=GPU_TYPE_RULE)
    storage: str | None = Field(None, json_schema_extra=QUANTITY_RULE)
    nodes_per_worker: int | None = Field(None, json_schema_extra=_at_least(1))
    min_workers: int | None = Field(None, json_schema_extra=_at_least(0, rules.MAX_WORKERS_CAP))
    max_workers: int | None = Field(None, json_schema_extra=_at_least(1, rules.MAX_WORKERS_CAP))
    per_worker: int | None = Field(None, json_schema_extra=_at_least(1))
    labels: dict[str, str] | None = Field(None, json_schema_extra=LABELS_RULE)
    metadata: dict[str, Any] | None = None
    public_inference: bool | None = None
    high_priority: bool | None = None
    post_inference_hooks: list[str] | None = None
    default_callback_url: str | None = None
    chat_template_override: str | None = Field(default=None, max_length=CHAT_TEMPLATE_MAX_CHARS)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"endpoint_type"})


class EndpointTaskResponse(BaseModel):
    endpoint_creation_task_id: str


class DeleteEndpointResponse(BaseModel):
    deleted: bool


class DeploymentState(BaseModel):
    min_workers: int
    max_workers: int
    per_worker: int
    concurrent_requests_per_worker: int
    available_workers: int
    unavailable_workers: int


class ResourceState(BaseModel):
    cpus: str
    gpus: int
    memory: str
    gpu_type: str | None
    storage: str | None
    nodes_per_worker: int
    optimize_costs: bool | None = None


class EndpointSpec(BaseModel):
    id: str
    name: str
    endpoint_type: str
    destination: str
    bundle_name: str
    status: EndpointStatus
    status_reason: str | None
    created_by: str
    created_at: datetime
    last_updated_at: datetime
    labels: dict[str, str]
    metadata: dict[str, Any]
    post_inference_hooks: list[str]
    default_callback_url: str | None
    deployment_state: DeploymentState
    resource_state: ResourceState
    public_inference: bool
    high_priority: bool


class EndpointResponse(BaseModel):
    id: str
    name: str
    model_name: str
    source: str
    status: EndpointStatus
    inference_framework: str
    inference_framework_image_tag: str
    inference_framework_tag: str  # the published client reads this name
    num_shards: int
    quantize: str | None
    checkpoint_path: str | None
    chat_template_override: str | None = None
    spec: EndpointSpec

    @classmethod
    def of(cls, endpoint: ModelEndpoint) -> EndpointResponse:
        config = endpoint.config
        # Most fields bear the name of the endpoint's or its config's own; only the others are spelled out.
        known = {**asdict(config), **{f.name: getattr(endpoint, f.name) for f in fields(endpoint)}}
        spec = {
            **known,
            "endpoint_type": config.endpoint_type.value,
            "destination": f"llm-engine-{endpoint.id}",
            "bundle_name": endpoint.name,
            "deployment_state": DeploymentState(**known, concurrent_requests_per_worker=config.per_worker),
            "resource_state": ResourceState(**known),
        }
        return cls(
            **{
                **known,
                "source": config.source.value,
                "inference_framework": config.inference_framework.value,
                "inference_framework_tag": config.inference_framework_image_tag,
                "spec": EndpointSpec(**spec),
            }
        )


class ListEndpointsResponse(BaseModel):
    model_endpoints: list[EndpointResponse]
