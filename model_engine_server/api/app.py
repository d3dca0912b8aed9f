"""The gateway application: ``create_app`` wires settings, the registry and an orchestrator into FastAPI."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from model_engine_server.api.deps import Services
from model_engine_server.api.errors import install_error_handlers
from model_engine_server.api.job_services import FilesAndJobs
from model_engine_server.api.routes import (
    async_tasks,
    batch_completions,
    completions,
    endpoints,
    files,
    fine_tunes,
    health,
)
from model_engine_server.config import Settings
from model_engine_server.db.repositories import ApiKeyStore, AsyncTaskStore, EndpointRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.admission import Admission
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.ports import Orchestrator
from model_engine_server.inference.completions import CompletionDispatcher
from model_engine_server.inference.upstream import UpstreamClient
from model_engine_server.tasks.celery_app import create_celery_app
from model_engine_server.tasks.client import AsyncTaskQueue

VERSION = "0.1.0"


def _no_op() -> None:
    return None


def create_app(
    settings: Settings,
    *,
    orchestrator: Orchestrator,
    on_registry_change: Callable[[], None] = _no_op,
    zoo: ModelZoo | None = None,
) -> FastAPI:
    """The gateway. ``on_registry_change`` wakes an in-process reconciler after every write (``model-engine serve``);
    the orchestrator is only used for routing here — the reconciler owns apply and delete."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = create_engine(settings.database_url)
        sessions = create_session_factory(database)
        keys = ApiKeyStore(sessions)
        if settings.bootstrap_api_key is not None:
            await keys.store(settings.bootstrap_api_key.get_secret_value(), settings.bootstrap_owner, "bootstrap")
        # Async completions: a Celery app (no connection until the first submit) over the task records.
        endpoint_registry = EndpointRegistry(sessions)
        model_zoo = zoo or settings.model_zoo()
        # One admission path (one endpoint cache) for sync, stream and async submit.
        admission = Admission(endpoint_registry, orchestrator, model_zoo)
        task_queue = AsyncTaskQueue(
            create_celery_app(settings),
            AsyncTaskStore(sessions),
            timedelta(seconds=settings.async_task_result_ttl_seconds),
            admission,
        )
        app.state.services = Services(
            settings=settings,
            endpoints=endpoint_registry,
            keys=keys,
            tasks=AsyncTaskStore(sessions),
            orchestrator=orchestrator,
            zoo=model_zoo,
            on_registry_change=on_registry_change,
            database=database,
            async_tasks=task_queue,
        )
        app.state.files_and_jobs = FilesAndJobs.build(settings, sessions, model_zoo, on_registry_change)
        # Local download links are signed with a per-process key: they stop working when this process stops, which
        # is sooner than their expiry only on a restart. (On S3 the store presigns them.)
        app.state.download_secret = secrets.token_bytes(32)
        # One pooled client for every inference server this process talks to.
        upstream = UpstreamClient.from_settings(settings)
        app.state.completions = CompletionDispatcher(admission, upstream)
        try:
            yield
        finally:
            await upstream.aclose()
            task_queue.close()
            await database.dispose()

    app = FastAPI(
        title="LLM Engine",
        version=VERSION,
        description="Deploy large language models and serve completions.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(endpoints.router)
    app.include_router(completions.router)
    app.include_router(async_tasks.router)
    app.include_router(files.router)
    app.include_router(batch_completions.router)
    app.include_router(fine_tunes.router)
    return app
