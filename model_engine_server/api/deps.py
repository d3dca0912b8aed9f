"""FastAPI dependencies. Everything a route needs is built in the app's lifespan and handed in from here,
so tests can swap any of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from model_engine_server.api.auth import authenticate
from model_engine_server.config import Settings
from model_engine_server.db.repositories import ApiKeyStore, AsyncTaskStore, EndpointRegistry
from model_engine_server.domain.endpoints import EndpointOperations
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import Orchestrator


@dataclass
class Services:
    """What the lifespan builds once per process."""

    settings: Settings
    endpoints: EndpointRegistry
    keys: ApiKeyStore
    tasks: AsyncTaskStore
    orchestrator: Orchestrator
    zoo: ModelZoo
    on_registry_change: Callable[[], None]
    database: AsyncEngine


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_caller(request: Request, services: ServicesDep) -> str:
    return await authenticate(request, services.settings.auth_mode, services.keys)


def get_endpoint_registry(services: ServicesDep) -> EndpointRegistry:
    return services.endpoints


def get_endpoint_operations(services: ServicesDep) -> EndpointOperations:
    return EndpointOperations(services.endpoints, services.zoo, services.on_registry_change)


def get_orchestrator(services: ServicesDep) -> Orchestrator:
    return services.orchestrator


SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[str, Depends(get_caller)]
EndpointRegistryDep = Annotated[EndpointRegistry, Depends(get_endpoint_registry)]
EndpointOperationsDep = Annotated[EndpointOperations, Depends(get_endpoint_operations)]
OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
