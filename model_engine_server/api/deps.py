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
from model_engine_server.inference.completions import CompletionDispatcher
from model_engine_server.tasks.client import AsyncTaskQueue


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
    async_tasks: AsyncTaskQueue | None = None  # the Celery side of async completions


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


async def get_caller(request: Request, services: ServicesDep) -> str:
    return await authenticate(request, services.settings.auth_mode, services.keys)


def get_endpoint_registry(services: ServicesDep) -> EndpointRegistry:
    return services.endpoints


def get_endpoint_operations(request: Request, services: ServicesDep) -> EndpointOperations:
    jobs = request.app.state.files_and_jobs.jobs  # fine-tuned models deploy by name
    return EndpointOperations(services.endpoints, services.zoo, services.on_registry_change, jobs.find_fine_tuned_model)


async def get_completion_dispatcher(request: Request) -> CompletionDispatcher:
    """Built in the lifespan next to the pooled upstream client (``app.state.completions``). Dependencies on the
    completion path are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which cost more
    than the rest of the gateway's work per request (benchmarks/gateway_overhead.py)."""
    dispatcher: CompletionDispatcher = request.app.state.completions
    return dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[str, Depends(get_caller)]
EndpointRegistryDep = Annotated[EndpointRegistry, Depends(get_endpoint_registry)]
EndpointOperationsDep = Annotated[EndpointOperations, Depends(get_endpoint_operations)]
CompletionDispatcherDep = Annotated[CompletionDispatcher, Depends(get_completion_dispatcher)]


def get_async_task_queue(services: ServicesDep) -> AsyncTaskQueue:
    assert services.async_tasks is not None, "create_app's lifespan builds the async task queue"
    return services.async_tasks


AsyncTaskQueueDep = Annotated[AsyncTaskQueue, Depends(get_async_task_queue)]
