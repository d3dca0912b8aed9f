"""The gateway application: ``create_app`` wires settings, the registry and an upstream resolver into FastAPI."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from model_engine_server import __version__
from model_engine_server.api.deps import Services
from model_engine_server.api.errors import install_error_handlers
from model_engine_server.api.job_services import FilesAndJobs
from model_engine_server.api.limits import Limits, RequestLimits
from model_engine_server.api.openai_errors import OpenAiRoute
from model_engine_server.api.openapi import install_openapi
from model_engine_server.api.routes import (
    api_keys,
    async_tasks,
    batch_completions,
    completions,
    endpoints,
    files,
    fine_tunes,
    health,
    openai,
    tenants,
)
from model_engine_server.config import Settings
from model_engine_server.db.registry import Registry
from model_engine_server.domain.admission import Admission
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import UpstreamResolver
from model_engine_server.domain.waking import Waker
from model_engine_server.inference.completions import CompletionDispatcher
from model_engine_server.inference.upstream import UpstreamClient
from model_engine_server.tasks.celery_app import create_celery_app
from model_engine_server.tasks.client import AsyncTaskQueue
from model_engine_server.tenancy.services import Tenancy


def _no_op() -> None:
    return None


def create_app(
    settings: Settings,
    *,
    resolver: UpstreamResolver,
    on_registry_change: Callable[[], None] = _no_op,
    zoo: ModelZoo | None = None,
) -> FastAPI:
    """The gateway. ``resolver`` says where an endpoint's requests go; ``on_registry_change`` wakes an in-process
    reconciler after every write (``model-engine serve``). The gateway never runs an orchestrator: the reconciler
    owns apply and delete."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = Registry(settings.database_url)
        if settings.bootstrap_api_key is not None:
            key = settings.bootstrap_api_key.get_secret_value()
            await registry.keys.store(key, settings.bootstrap_owner, "bootstrap", admin=True)
        tenancy = Tenancy.build(settings, registry)
        await tenancy.start()
        model_zoo = zoo or settings.model_zoo()
        # One admission path (one endpoint cache, the tenants' token budgets) for sync, stream and async submit.
        policy = settings.scaling_policy()
        waker = Waker.of(registry.endpoints, resolver, policy, settings.cold_start_timeout_seconds, on_registry_change)
        admission = Admission(
            registry.endpoints, resolver, model_zoo, check_tenant=tenancy.limiter.check_tokens, waker=waker
        )
        # Async completions: a Celery app (no connection until the first submit) over the task records.
        task_queue = AsyncTaskQueue(
            create_celery_app(settings),
            registry.tasks,
            timedelta(seconds=settings.async_task_result_ttl_seconds),
            admission,
        )
        app.state.services = Services(
            settings=settings,
            endpoints=registry.endpoints,
            keys=tenancy.keys,  # key checks at cache speed
            tasks=registry.tasks,
            zoo=model_zoo,
            on_registry_change=on_registry_change,
            async_tasks=task_queue,
            health={"database": registry, "broker": task_queue},
            tenancy=tenancy,
        )
        app.state.files_and_jobs = FilesAndJobs.build(settings, registry, model_zoo, on_registry_change, tenancy)
        # Local download links are signed with a per-process key: they stop working when this process stops, which
        # is sooner than their expiry only on a restart. (On S3 the store presigns them.)
        app.state.download_secret = secrets.token_bytes(32)
        # One pooled client for every inference server this process talks to.
        upstream = UpstreamClient.from_settings(settings)
        app.state.completions = CompletionDispatcher(admission, upstream, tenancy.gate)
        try:
            yield
        finally:
            await upstream.aclose()
            await tenancy.close()
            task_queue.close()
            await registry.close()

    app = FastAPI(
        title="LLM Engine",
        version=__version__,
        description="Deploy large language models and serve completions.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(endpoints.router)
    app.include_router(completions.router)
    app.include_router(async_tasks.router)
    app.include_router(openai.router)
    app.include_router(files.router)
    app.include_router(batch_completions.router)
    app.include_router(api_keys.router)
    app.include_router(tenants.router)
    app.include_router(fine_tunes.router)
    openai_paths = [
        context.path_regex
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, OpenAiRoute)
    ]
    app.add_middleware(
        RequestLimits, limits=Limits.of(settings), openai_paths=openai_paths, upload_paths=[files.UPLOAD_PATH]
    )
    install_openapi(app)  # built on first request, so it covers every router included here
    return app
