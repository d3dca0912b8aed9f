"""The job half of the reconciler: turns job records into running workers and writes what happens back.

For every queued or running job, once per pass::

    cancel requested           -> runner.stop_job, CANCELLED
    QUEUED                     -> runner.start_job, RUNNING
    RUNNING past its deadline  -> runner.stop_job, FAILED ("runtime exceeded")
    RUNNING                    -> progress from the workspace; then by what the runner observes:
        succeeded              -> the kind's completion hook (e.g. register the output file), COMPLETED
        failed                 -> FAILED with the worker's own reason
        crashed / missing      -> start again (workers resume from the workspace) while restarts remain
        pending / running      -> the runner's reason, if any, as the status reason (a pod that cannot start)

Writes are conditional on the job still being active, so a cancel recorded meanwhile is never overwritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from model_engine_server.db.job_registry import JobRegistry
from model_engine_server.domain.jobs import Job, JobKind, JobStatus, RunState
from model_engine_server.domain.ports import JobRunner
from model_engine_server.storage.port import ObjectStore
from model_engine_server.storage.workspace import JobWorkspace

log = logging.getLogger(__name__)

# Called once when a job of that kind succeeded; returns what goes into ``Job.result``.
CompletionHook = Callable[[Job], Awaitable[dict[str, str]]]


class JobReconciler:
    def __init__(
        self,
        registry: JobRegistry,
        runner: JobRunner,
        store: ObjectStore,
        *,
        max_restarts: int = 3,
        on_success: dict[JobKind, CompletionHook] | None = None,
    ) -> None:
        self.registry = registry
        self.runner = runner
        self._store = store
        self._max_restarts = max_restarts
        self._on_success = on_success or {}

    async def reconcile_once(self) -> None:
        for job in await self.registry.list_active():
            try:
                await self._reconcile(job)
            except Exception:  # one job's trouble must not stall the others
                log.exception("Reconciling job %s failed; will retry", job.id)

    async def _reconcile(self, job: Job) -> None:
        if job.cancel_requested:
            await self.runner.stop_job(job)
            await self._finish(job, JobStatus.CANCELLED, "Cancelled by the user.")
        elif job.status is JobStatus.QUEUED:
            await self.runner.start_job(job)
            if await self.registry.update(job.id, status=JobStatus.RUNNING, started_at=datetime.now(UTC)):
                await self.registry.add_event(job.id, f"Started {job.parallelism} worker(s).")
        elif job.started_at and datetime.now(UTC) > job.started_at + timedelta(seconds=job.max_runtime_sec):
            await self.runner.stop_job(job)
            await self._finish(
                job,
                JobStatus.FAILED,
                f"runtime exceeded: the job ran longer than max_runtime_sec "
                f"({job.max_runtime_sec} s); raise max_runtime_sec or split the input",
            )
        else:
            await self._follow(job)

    async def _follow(self, job: Job) -> None:
        statuses = await asyncio.to_thread(JobWorkspace(self._store, job.id).worker_statuses)
        done = min(sum(s.done for s in statuses), job.progress_total)
        if done != job.progress_done:
            await self.registry.update(job.id, progress_done=done)
        observed = await self.runner.observe_job(job)
        if observed.state is RunState.SUCCEEDED:
            hook = self._on_success.get(job.kind)
            try:
                result = {**job.result, **(await hook(job) if hook else {})}
            except Exception as error:  # e.g. the output is not where the workers said they wrote it
                log.exception("Job %s: recording its result failed", job.id)
                await self._finish(job, JobStatus.FAILED, f"the workers finished but the result is unusable: {error}")
                return
            await self.registry.update(job.id, result=result, progress_done=job.progress_total)
            await self._finish(job, JobStatus.COMPLETED, None)
        elif observed.state is RunState.FAILED:
            reason = next((s.error for s in statuses if s.error), None) or observed.reason or "the job failed"
            await self.runner.stop_job(job)
            await self._finish(job, JobStatus.FAILED, reason)
        elif observed.state in (RunState.CRASHED, RunState.MISSING):
            await self._restart(job, observed.reason or observed.state.value, done)
        elif observed.reason != job.status_reason:  # pending or running; e.g. a pod that cannot be scheduled
            await self.registry.update(job.id, status_reason=observed.reason)

    async def _restart(self, job: Job, reason: str, done: int) -> None:
        if job.restarts >= self._max_restarts:
            await self.runner.stop_job(job)
            await self._finish(job, JobStatus.FAILED, f"gave up after {job.restarts} restarts: {reason}")
            return
        log.warning("Job %s: %s; restarting (resumes at %d of %d)", job.id, reason, done, job.progress_total)
        await self.runner.start_job(job)
        if await self.registry.update(job.id, restarts=job.restarts + 1):
            await self.registry.add_event(
                job.id, f"{reason}; restarted, resuming with {done} of {job.progress_total} done.", "warning"
            )

    async def _finish(self, job: Job, status: JobStatus, reason: str | None) -> None:
        if await self.registry.update(job.id, status=status, status_reason=reason, completed_at=datetime.now(UTC)):
            level = "error" if status is JobStatus.FAILED else "info"
            await self.registry.add_event(job.id, f"Job {status.value}" + (f": {reason}" if reason else "."), level)
            log.info("Job %s %s%s", job.id, status.value, f": {reason}" if reason else "")
