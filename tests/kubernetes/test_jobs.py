"""Batch jobs on Kubernetes, over the wire: the reconciler creates the indexed Job, follows it through its
conditions (seen by a watch), records progress and the output file, fails it with Kubernetes' reason, and cancel
deletes it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from model_engine_server.db.file_registry import FileRegistry
from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.db.session import create_engine, create_session_factory
from model_engine_server.domain.fine_tuning import MERGED_RESULT_DIR
from model_engine_server.domain.jobs import Job, JobKind, JobStatus, WorkerStatus
from model_engine_server.orchestration.job_hooks import register_batch_output, register_fine_tuned_model
from model_engine_server.orchestration.jobs import JobReconciler
from model_engine_server.orchestration.kubernetes.jobs import KubernetesJobRunner, job_name
from model_engine_server.storage.local import LocalObjectStore
from model_engine_server.storage.locations import StorageConfig
from model_engine_server.storage.workspace import JobWorkspace
from tests.kubernetes.conftest import NAMESPACE, OrchestratorFactory, make_settings, pod_of
from tests.kubernetes.emulator import KubeEmulator


@dataclass
class Harness:
    reconciler: JobReconciler
    jobs: JobRegistry
    files: FileRegistry
    store: LocalObjectStore
    emulator: KubeEmulator
    tmp: Path

    async def submit(self, parallelism: int = 2, kind: JobKind = JobKind.BATCH_COMPLETION) -> Job:
        now = datetime.now(UTC)
        output = (self.tmp / "out.json").as_uri()
        spec = {"output_data_path": output, "model_config": {"model": "smollm2-135m"}}
        if kind is JobKind.FINE_TUNE:
            spec = {"model": "smollm2-135m", "fine_tuned_model": "smollm2-135m.k8s.261130-010203"}
        job = Job(
            id=f"job-{time.monotonic_ns():x}",
            kind=kind,
            owner="team-a",
            spec=spec,
            status=JobStatus.QUEUED,
            created_at=now,
            expires_at=now + timedelta(hours=1),
            parallelism=parallelism,
            max_runtime_sec=600,
            progress_total=10,
        )
        return await self.jobs.create(job)

    def kube_job(self, job: Job) -> dict[str, object] | None:
        return self.emulator.get("batch", "jobs", NAMESPACE, job_name(job))

    def add_pod(self, job: Job, index: int, status: dict[str, object]) -> None:
        """A pod of the Job, as the Job controller would create it, in ``status`` (what the kubelet reports)."""
        kube_job = self.kube_job(job)
        assert kube_job is not None
        self.emulator.put("", "pods", NAMESPACE, pod_of(kube_job, str(index), status))

    def set_status(self, job: Job, status: dict[str, object]) -> None:
        self.emulator.patch("batch", "jobs", NAMESPACE, job_name(job), {"status": status})

    async def until(self, job: Job, condition: object, timeout: float = 10) -> Job:
        """Reconcile until the job's record satisfies ``condition`` (the watch delivers status asynchronously)."""
        assert callable(condition)
        deadline = time.monotonic() + timeout
        while True:
            await self.reconciler.reconcile_once()
            current = await self.jobs.get(job.id)
            if condition(current):
                return current
            assert time.monotonic() < deadline, f"job stuck at {current.status}: {current.status_reason}"
            await asyncio.sleep(0.05)


@pytest.fixture
async def harness(
    emulator: KubeEmulator, make_orchestrator: OrchestratorFactory, database_url: str, tmp_path: Path
) -> AsyncIterator[Harness]:
    orchestrator = await make_orchestrator()
    engine: AsyncEngine = create_engine(database_url)
    sessions = create_session_factory(engine)
    store = LocalObjectStore(tmp_path / "objects")
    settings = make_settings(tmp_path, object_store_url=store.url, job_max_restarts=4)
    runner = KubernetesJobRunner(settings, orchestrator)
    files = FileRegistry(sessions)
    storage = StorageConfig(url=store.url)
    reconciler = JobReconciler(
        JobRegistry(sessions),
        runner,
        store,
        on_success={
            JobKind.BATCH_COMPLETION: register_batch_output(files, storage),
            JobKind.FINE_TUNE: register_fine_tuned_model(store),
        },
    )
    yield Harness(reconciler, JobRegistry(sessions), files, store, emulator, tmp_path)
    await runner.close()
    await engine.dispose()


async def test_job_runs_as_an_indexed_kubernetes_job_and_completes(harness: Harness) -> None:
    job = await harness.submit(parallelism=2)
    running = await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    manifest = harness.kube_job(job)
    assert manifest is not None
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    assert spec["activeDeadlineSeconds"] == 600 and spec["backoffLimit"] == 4
    assert spec["template"]["spec"]["containers"][0]["args"] == ["batch-run", "--job-id", job.id]
    assert running.started_at is not None

    harness.set_status(job, {"active": 2})
    workspace = JobWorkspace(harness.store, job.id)
    workspace.report(0, WorkerStatus(3, 5))
    workspace.report(1, WorkerStatus(4, 5))
    await harness.until(job, lambda j: j.progress_done == 7)

    (harness.tmp / "out.json").write_text('[{"text": "a"}]')
    harness.set_status(job, {"active": 0, "succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]})
    done = await harness.until(job, lambda j: j.status is JobStatus.COMPLETED)
    assert done.progress_done == 10 and done.completed_at is not None
    output = await harness.files.get_owned(done.result["output_file_id"], "team-a")
    assert output.size == len('[{"text": "a"}]') and output.filename == "out.json"


async def test_kubernetes_failure_reasons_reach_the_job(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    harness.set_status(job, {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]})
    failed = await harness.until(job, lambda j: j.status is JobStatus.FAILED)
    assert failed.status_reason == "runtime exceeded (activeDeadlineSeconds)"
    assert harness.kube_job(job) is None  # a failed Job is removed, its pods with it


async def test_a_worker_error_in_the_workspace_is_the_reason(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    JobWorkspace(harness.store, job.id).report(1, WorkerStatus(0, 5, "bad input row 7: `inputs` too long"))
    harness.set_status(job, {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    failed = await harness.until(job, lambda j: j.status is JobStatus.FAILED)
    assert failed.status_reason == "bad input row 7: `inputs` too long"


async def test_cancel_deletes_the_job(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    assert harness.kube_job(job) is not None
    assert await harness.jobs.request_cancel(job.id)
    cancelled = await harness.until(job, lambda j: j.status is JobStatus.CANCELLED)
    assert cancelled.status_reason == "Cancelled by the user."
    assert harness.kube_job(job) is None
    assert [e.message for e in await harness.jobs.events(job.id)][-1] == "Job cancelled: Cancelled by the user."


async def test_a_job_deleted_behind_our_back_is_recreated(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING and harness.kube_job(j) is not None)
    harness.emulator.remove("batch", "jobs", NAMESPACE, job_name(job))
    restarted = await harness.until(job, lambda j: j.restarts == 1)
    assert restarted.status is JobStatus.RUNNING
    assert harness.kube_job(job) is not None


async def test_a_job_that_succeeds_without_its_output_fails_saying_so(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    harness.set_status(job, {"conditions": [{"type": "Complete", "status": "True"}]})  # but no output was written
    failed = await harness.until(job, lambda j: j.status is JobStatus.FAILED)
    assert str(failed.status_reason).startswith("the workers finished but the result is unusable")


async def test_an_out_of_memory_pod_is_the_reason_a_job_failed(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    oom = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    harness.add_pod(job, 0, {"phase": "Failed", "containerStatuses": [{"name": "worker", "state": oom}]})
    harness.set_status(job, {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})
    failed = await harness.until(job, lambda j: j.status is JobStatus.FAILED)
    assert "ran out of memory (OOMKilled)" in str(failed.status_reason)


async def test_a_job_whose_pods_cannot_be_scheduled_says_why_while_it_waits(harness: Harness) -> None:
    job = await harness.submit()
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING)
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    harness.add_pod(job, 0, {"phase": "Pending", "conditions": [unschedulable]})
    waiting = await harness.until(job, lambda j: j.status_reason is not None and "Cannot schedule" in j.status_reason)
    assert waiting.status is JobStatus.RUNNING  # still waiting for a node, not failed
    assert message in str(waiting.status_reason)


async def test_a_fine_tune_survives_its_job_vanishing_and_its_result_becomes_a_model(harness: Harness) -> None:
    job = await harness.submit(parallelism=1, kind=JobKind.FINE_TUNE)
    await harness.until(job, lambda j: j.status is JobStatus.RUNNING and harness.kube_job(j) is not None)
    manifest = harness.kube_job(job)
    assert manifest is not None
    assert manifest["spec"]["template"]["spec"]["containers"][0]["args"] == ["fine-tune-run", "--job-id", job.id]
    # The trainer checkpointed, then its Job went (a drained node, a deleted namespace object): the new Job's pod
    # finds the checkpoint where the first left it.
    workspace = JobWorkspace(harness.store, job.id)
    harness.store.put(workspace.prefix + "checkpoint/state.pt", b"step 2")
    harness.emulator.remove("batch", "jobs", NAMESPACE, job_name(job))
    await harness.until(job, lambda j: j.restarts == 1 and harness.kube_job(j) is not None)
    assert harness.store.get(workspace.prefix + "checkpoint/state.pt") == b"step 2"

    harness.store.put(workspace.prefix + MERGED_RESULT_DIR + "/config.json", b"{}")
    harness.set_status(job, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    done = await harness.until(job, lambda j: j.status is JobStatus.COMPLETED)
    model = await harness.jobs.find_fine_tuned_model("team-a", "smollm2-135m.k8s.261130-010203")
    assert model is not None and done.result["fine_tuned_model"] == model.name
    assert Path(model.checkpoint_path) == harness.tmp / "objects" / workspace.prefix / MERGED_RESULT_DIR
    assert await harness.jobs.find_fine_tuned_model("team-b", model.name) is None
