"""FastAPI dependencies. Everything a route needs is built in the app's lifespan and handed in from here,
so tests can swap any of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from model_engine_server.api.auth import authenticate, extract_api_key
from model_engine_server.config import AuthMode, Settings
from model_engine_server.domain.endpoints import EndpointOperations
from model_engine_server.domain.exceptions import ForbiddenError
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import ApiKeys, AsyncTaskRecords, EndpointStore, HealthCheck
from model_engine_server.domain.tenancy import Limit
from model_engine_server.inference.completions import CompletionDispatcher
from model_engine_server.tasks.client import AsyncTaskQueue
from model_engine_server.tenancy.services import Tenancy


@dataclass
class Services:
    """What the lifespan builds once per process."""

    settings: Settings
    endpoints: EndpointStore
    keys: ApiKeys
    tasks: AsyncTaskRecords
    zoo: ModelZoo
    on_registry_change: Callable[[], None]
    async_tasks: AsyncTaskQueue  # the Celery side of async completions
    health: dict[str, HealthCheck]  # what /readyz checks, by name
    tenancy: Tenancy | None = None  # key cache, tenants' limits, usage (built by create_app's lifespan)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> Settings:
    return services.settings


def get_tenancy(services: ServicesDep) -> Tenancy:
    assert services.tenancy is not None, "create_app's lifespan builds tenancy"
    return services.tenancy


async def get_caller(request: Request, services: ServicesDep) -> str:
    """The authenticated tenant; every authenticated request counts against its requests per minute."""
    caller = await authenticate(request, services.settings.auth_mode, services.keys)
    await get_tenancy(services).limiter.admit_request(caller)
    return caller


def get_endpoint_registry(services: ServicesDep) -> EndpointStore:
    return services.endpoints


def get_endpoint_operations(request: Request, services: ServicesDep) -> EndpointOperations:
    tenancy = get_tenancy(services)

    async def check_endpoint_quota(owner: str) -> None:
        await tenancy.check_quota(owner, Limit.MAX_ENDPOINTS)

    jobs = request.app.state.files_and_jobs.jobs  # fine-tuned models deploy by name
    return EndpointOperations(
        services.endpoints,
        services.zoo,
        services.on_registry_change,
        check_endpoint_quota,
        fine_tuned_models=jobs.find_fine_tuned_model,
    )


async def get_completion_dispatcher(request: Request) -> CompletionDispatcher:
    """Built in the lifespan next to the pooled upstream client (``app.state.completions``). Dependencies on the
    completion path are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which cost more
    than the rest of the gateway's work per request (benchmarks/gateway_overhead.py)."""
    dispatcher: CompletionDispatcher = request.app.state.completions
    return dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[str, Depends(get_caller)]
EndpointRegistryDep = Annotated[EndpointStore, Depends(get_endpoint_registry)]
EndpointOperationsDep = Annotated[EndpointOperations, Depends(get_endpoint_operations)]
CompletionDispatcherDep = Annotated[CompletionDispatcher, Depends(get_completion_dispatcher)]
TenancyDep = Annotated[Tenancy, Depends(get_tenancy)]


@dataclass(frozen=True)
class Principal:
    """The caller and whether its key has the admin scope (manages every tenant's keys and limits)."""

    tenant: str
    admin: bool

    def require_admin(self, action: str) -> None:
        if not self.admin:
            raise ForbiddenError(f"Only an admin key may {action}.")

    def require_self_or_admin(self, tenant: str, action: str) -> None:
        if tenant != self.tenant:
            self.require_admin(f"{action} of another tenant")


async def get_principal(request: Request, services: ServicesDep) -> Principal:
    caller = await get_caller(request, services)
    if services.settings.auth_mode is AuthMode.OPEN:  # loopback only: the bootstrap owner's name is the admin
        return Principal(caller, caller == services.settings.bootstrap_owner)
    identity = await get_tenancy(services).keys.identify_key(extract_api_key(request) or "")  # cached: no query
    return Principal(caller, identity is not None and identity.admin)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_async_task_queue(services: ServicesDep) -> AsyncTaskQueue:
    return services.async_tasks


AsyncTaskQueueDep = Annotated[AsyncTaskQueue, Depends(get_async_task_queue)]
