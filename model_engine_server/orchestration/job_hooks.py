"""What happens when a job of each kind succeeds, and the job reconciler wired with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import unquote, urlparse

from model_engine_server.config import Settings
from model_engine_server.db.file_registry import FileRegistry, new_file_id
from model_engine_server.db.registry import Registry
from model_engine_server.domain.fine_tuning import MERGED_RESULT_DIR
from model_engine_server.domain.jobs import Job, JobKind
from model_engine_server.domain.ports import JobRunner, Orchestrator
from model_engine_server.orchestration.jobs import CompletionHook, JobReconciler
from model_engine_server.storage.locations import StorageConfig, build_object_store, open_location
from model_engine_server.storage.port import ObjectStore
from model_engine_server.storage.workspace import JobWorkspace


def register_batch_output(files: FileRegistry, storage: StorageConfig) -> CompletionHook:
    """A finished batch's output becomes one of its owner's files, so ``File.download`` reads it anywhere."""

    async def hook(job: Job) -> dict[str, str]:
        path = str(job.spec["output_data_path"])
        store, key = open_location(path, storage)
        size = len(await asyncio.to_thread(store.get, key))
        stored = await files.create(
            file_id=new_file_id(), owner=job.owner, filename=key.rsplit("/", 1)[-1], size=size, location=path
        )
        return {"output_file_id": stored.id}

    return hook


def register_fine_tuned_model(store: ObjectStore) -> CompletionHook:
    """A finished fine-tune's merged checkpoint becomes a model its owner can deploy by name."""

    async def hook(job: Job) -> dict[str, str]:
        location = f"{store.url}/{JobWorkspace(store, job.id).prefix}{MERGED_RESULT_DIR}"
        if location.startswith("file://"):  # the local orchestrator and the built-in server take plain paths
            location = str(Path(unquote(urlparse(location).path)))
        return {"fine_tuned_model": str(job.spec["fine_tuned_model"]), "checkpoint_path": location}

    return hook


def build_job_runner(settings: Settings, orchestrator: Orchestrator) -> JobRunner:
    """Jobs run where endpoints run: the Kubernetes runner shares the orchestrator's API client."""
    from model_engine_server.config import OrchestratorKind

    if settings.orchestrator is OrchestratorKind.KUBERNETES:
        from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
        from model_engine_server.orchestration.kubernetes.jobs import KubernetesJobRunner

        assert isinstance(orchestrator, KubernetesOrchestrator), "jobs on Kubernetes share its API client and pods"
        return KubernetesJobRunner(settings, orchestrator)
    from model_engine_server.orchestration.local.jobs import LocalJobRunner

    return LocalJobRunner(settings)


def build_job_reconciler(settings: Settings, registry: Registry, orchestrator: Orchestrator) -> JobReconciler:
    storage = settings.storage_config()
    return JobReconciler(
        registry.jobs,
        build_job_runner(settings, orchestrator),
        build_object_store(storage),
        max_restarts=settings.job_max_restarts,
        on_success={
            JobKind.BATCH_COMPLETION: register_batch_output(registry.files, storage),
            JobKind.FINE_TUNE: register_fine_tuned_model(build_object_store(storage)),
        },
    )
