"""What the Files and job routes share: the file and job registries and object storage, built once per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from model_engine_server.config import Settings
from model_engine_server.db.file_registry import FileRegistry
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.registry import Registry
from model_engine_server.domain.exceptions import InvalidRequestError, OrchestrationError
from model_engine_server.domain.jobs import JobKind
from model_engine_server.domain.model_zoo import ModelZoo
from model_engine_server.domain.tenancy import Limit
from model_engine_server.storage.locations import StorageConfig, build_object_store
from model_engine_server.storage.port import ObjectStore
from model_engine_server.tenancy.services import Tenancy

ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class FilesAndJobs:
    settings: Settings
    files: FileRegistry
    jobs: JobRegistry
    store: ObjectStore  # the platform's own store: uploaded files, job workspaces
    storage: StorageConfig
    zoo: ModelZoo
    on_change: Callable[[], None]  # wakes the reconciler after a job is recorded or cancelled
    tenancy: Tenancy  # the tenant's quotas, checked before a job is recorded

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: Registry,
        zoo: ModelZoo,
        on_change: Callable[[], None],
        tenancy: Tenancy,
    ) -> FilesAndJobs:
        storage = settings.storage_config()
        store = build_object_store(storage)
        return cls(settings, registry.files, registry.jobs, store, storage, zoo, on_change, tenancy)

    async def check_job_admission(self, owner: str, kind: JobKind) -> None:
        """503 when jobs cannot run in this deployment (Kubernetes pods cannot reach a store on the control plane's
        disk); 429 when the owner already has ``max_jobs`` batch or fine-tune jobs queued or running, or (a fine-tune)
        its ``max_endpoints`` endpoints and fine-tunes."""
        if not self.storage.allow_local_paths and self.store.url.startswith("file://"):
            raise OrchestrationError(
                "Jobs on Kubernetes need object storage every pod reaches, and this deployment stores objects on "
                "the control plane's disk: set LLM_ENGINE_OBJECT_STORE_URL (chart value objectStorage.url) to "
                "s3://bucket/prefix."
            )
        await self.tenancy.check_quota(owner, Limit.MAX_JOBS)
        if kind is JobKind.FINE_TUNE:
            await self.tenancy.check_quota(owner, Limit.MAX_ENDPOINTS)

    async def cancel_owned(self, job_id: str, caller: str, kind: JobKind) -> bool:
        """Ask the caller's job to stop (404 when it is not theirs); False when it had already finished."""
        await self.jobs.get_owned(job_id, caller, kind)
        cancelled = await self.jobs.request_cancel(job_id)
        self.on_change()
        return cancelled


async def get_files_and_jobs(request: Request) -> FilesAndJobs:
    services: FilesAndJobs = request.app.state.files_and_jobs
    return services


FilesAndJobsDep = Annotated[FilesAndJobs, Depends(get_files_and_jobs)]


def parse_body(model: type[ModelT], body: Any) -> ModelT:
    """Validate a JSON body; problems are a 400 naming each field (the published client maps only 400 to a typed
    error, not FastAPI's 422)."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise InvalidRequestError(f"Invalid request: {problems}") from None
