"""Request and response bodies of the endpoint API, field for field as the published client sends and parses them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint

Quantity = str | int | float
# Every endpoint serves sync, streaming and async requests alike, so `endpoint_type` is accepted (and checked) for
# compatibility but always reads back as "streaming": the published client cannot parse any other value.
EVERY_ENDPOINT_TYPE = "streaming"


def _quantity_to_str(value: Quantity | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


CHAT_TEMPLATE_MAX_CHARS = 65_536


class _Request(BaseModel):
    # Unknown fields are ignored so newer clients keep working against this server.
    model_config = ConfigDict(extra="ignore")

    @field_validator("cpus", "memory", "storage", mode="before", check_fields=False)
    @classmethod
    def _normalise_quantity(cls, value: Quantity | None) -> str | None:
        if isinstance(value, bool):
            raise ValueError("must be a quantity such as 4, '500m' or '16Gi'")
        return _quantity_to_str(value)


class CreateEndpointRequest(_Request):
    name: str
    model_name: str
    source: Literal["hugging_face"] = "hugging_face"
    inference_framework: str = "text_generation_inference"
    inference_framework_image_tag: str = "latest"
    num_shards: int = 1
    quantize: str | None = None
    checkpoint_path: str | None = None
    endpoint_type: Literal["streaming", "sync", "async"] = "streaming"
    cpus: str | None = None
    gpus: int | None = None
    memory: str | None = None
    gpu_type: str | None = None
    storage: str | None = None
    nodes_per_worker: int = 1
    min_workers: int = 1
    max_workers: int = 1
    per_worker: int = 10
    labels: dict[str, str] = Field(default_factory=dict)
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
    inference_framework: str | None = None
    inference_framework_image_tag: str | None = None
    num_shards: int | None = None
    quantize: str | None = None
    checkpoint_path: str | None = None
    endpoint_type: Literal["streaming", "sync", "async"] | None = None
    cpus: str | None = None
    gpus: int | None = None
    memory: str | None = None
    gpu_type: str | None = None
    storage: str | None = None
    nodes_per_worker: int | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    per_worker: int | None = None
    labels: dict[str, str] | None = None
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
        return cls(
            id=endpoint.id,
            name=endpoint.name,
            model_name=config.model_name,
            source=config.source.value,
            status=endpoint.status,
            inference_framework=config.inference_framework.value,
            inference_framework_image_tag=config.inference_framework_image_tag,
            inference_framework_tag=config.inference_framework_image_tag,
            num_shards=config.num_shards,
            quantize=config.quantize,
            checkpoint_path=config.checkpoint_path,
            chat_template_override=config.chat_template_override,
            spec=EndpointSpec(
                id=endpoint.id,
                name=endpoint.name,
                endpoint_type=config.endpoint_type.value,
                destination=f"llm-engine-{endpoint.id}",
                bundle_name=endpoint.name,
                status=endpoint.status,
                status_reason=endpoint.status_reason,
                created_by=endpoint.created_by,
                created_at=endpoint.created_at,
                last_updated_at=endpoint.last_updated_at,
                labels=config.labels,
                metadata=config.metadata,
                post_inference_hooks=config.post_inference_hooks,
                default_callback_url=config.default_callback_url,
                deployment_state=DeploymentState(
                    min_workers=config.min_workers,
                    max_workers=config.max_workers,
                    per_worker=config.per_worker,
                    concurrent_requests_per_worker=config.per_worker,
                    available_workers=endpoint.available_workers,
                    unavailable_workers=endpoint.unavailable_workers,
                ),
                resource_state=ResourceState(
                    cpus=config.cpus,
                    gpus=config.gpus,
                    memory=config.memory,
                    gpu_type=config.gpu_type,
                    storage=config.storage,
                    nodes_per_worker=config.nodes_per_worker,
                ),
                public_inference=config.public_inference,
                high_priority=config.high_priority,
            ),
        )


class ListEndpointsResponse(BaseModel):
    model_endpoints: list[EndpointResponse]
