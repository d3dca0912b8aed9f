"""``/v1/llm/model-endpoints``: register, inspect, change and remove model endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Query

from model_engine_server.api.deps import CallerDep, EndpointOperationsDep, EndpointRegistryDep
from model_engine_server.api.schemas import (
    CreateEndpointRequest,
    DeleteEndpointResponse,
    EndpointResponse,
    EndpointTaskResponse,
    ListEndpointsResponse,
    UpdateEndpointRequest,
)
from model_engine_server.domain.entities import EndpointOrder

router = APIRouter(prefix="/v1/llm/model-endpoints", tags=["model endpoints"])


@router.post("", response_model=EndpointTaskResponse)
async def create_endpoint(
    body: CreateEndpointRequest, caller: CallerDep, operations: EndpointOperationsDep
) -> EndpointTaskResponse:
    endpoint = await operations.create(caller, body.name, body.config_fields())
    return EndpointTaskResponse(endpoint_creation_task_id=f"{endpoint.id}-r{endpoint.revision}")


@router.get("", response_model=ListEndpointsResponse)
async def list_endpoints(
    caller: CallerDep,
    registry: EndpointRegistryDep,
    name: str | None = None,
    order_by: EndpointOrder = Query(EndpointOrder.NEWEST),
) -> ListEndpointsResponse:
    endpoints = await registry.list_owned(caller, name=name, order_by=order_by)
    return ListEndpointsResponse(model_endpoints=[EndpointResponse.of(e) for e in endpoints])


@router.get("/{name}", response_model=EndpointResponse)
async def get_endpoint(name: str, caller: CallerDep, registry: EndpointRegistryDep) -> EndpointResponse:
    return EndpointResponse.of(await registry.get_owned(name, caller))


@router.put("/{name}", response_model=EndpointTaskResponse)
async def update_endpoint(
    name: str, body: UpdateEndpointRequest, caller: CallerDep, operations: EndpointOperationsDep
) -> EndpointTaskResponse:
    endpoint = await operations.update(caller, name, body.changes())
    return EndpointTaskResponse(endpoint_creation_task_id=f"{endpoint.id}-r{endpoint.revision}")


@router.delete("/{name}", response_model=DeleteEndpointResponse)
async def delete_endpoint(name: str, caller: CallerDep, operations: EndpointOperationsDep) -> DeleteEndpointResponse:
    await operations.delete(caller, name)
    return DeleteEndpointResponse(deleted=True)
