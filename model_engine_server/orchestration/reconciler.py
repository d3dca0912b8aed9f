"""The reconciler: makes what runs match the registry, and writes what runs back into it.

The gateway only records wishes (a new revision in UPDATE_PENDING, or DELETE_IN_PROGRESS). One loop, in one process
(on Kubernetes: the Lease holder), turns them into orchestrator calls::

    for every endpoint in the registry:
        DELETE_IN_PROGRESS            -> orchestrator.delete, then remove the record
        any other                     -> orchestrator.set_asleep (min_workers == 0 and idle: zero workers)
        revision not applied yet      -> UPDATE_IN_PROGRESS (for a new revision), orchestrator.apply
        then                          -> orchestrator.observe; write status, reason and worker counts when changed
    wait for the orchestrator to see a change, a poke from the gateway, or the interval

"Applied" is remembered in memory only, so after a restart every endpoint is applied once more: ``apply`` is
idempotent. A failing apply turns the endpoint UPDATE_FAILED with the reason and is retried later; it never stops the
loop. Writes name the revision they are about, so a newer revision or a delete recorded meanwhile always wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from model_engine_server.domain.autoscaling import should_sleep
from model_engine_server.domain.entities import EndpointStatus, ModelEndpoint, ObservedState
from model_engine_server.domain.exceptions import DomainError
from model_engine_server.domain.ports import ObservedEndpoints, Orchestrator
from model_engine_server.orchestration.jobs import JobReconciler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcilePolicy:
    interval_seconds: float = 2.0  # longest wait between passes when nothing signals a change
    apply_retry_seconds: float = 30.0  # a failed apply of the same revision is retried this often
    reapply_missing_seconds: float = 10.0  # an orchestrator reporting resources missing gets apply() at most this often
    idle_seconds: float = 900.0  # an endpoint with min_workers == 0 and no request for this long goes to zero workers


@dataclass
class _Applied:
    revision: int
    at: float  # monotonic time of the last apply attempt
    failed: bool = False


class Reconciler:
    def __init__(
        self,
        registry: ObservedEndpoints,
        orchestrator: Orchestrator,
        policy: ReconcilePolicy | None = None,
        jobs: JobReconciler | None = None,
    ) -> None:
        self._registry = registry
        self._jobs = jobs  # batch completions and fine-tunes, reconciled in the same pass
        self._orchestrator = orchestrator
        self._policy = policy or ReconcilePolicy()
        self._applied: dict[str, _Applied] = {}
        self._poked = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.passes = 0  # completed passes, for callers that wait for the registry to catch up

    def poke(self) -> None:
        """Reconcile now (the gateway calls this after every registry write). Safe from any thread."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._poked.set()
        else:
            loop.call_soon_threadsafe(self._poked.set)

    async def run(self) -> None:
        """Reconcile until cancelled."""
        self._loop = asyncio.get_running_loop()
        while True:
            self._poked.clear()
            try:
                await self.reconcile_once()
            except Exception:  # the registry may be briefly unreachable; never give up on the loop
                log.exception("Reconciliation pass failed; retrying in %.0fs", self._policy.interval_seconds)
            await self._wait()

    async def reconcile_once(self) -> None:
        endpoints = await self._registry.list_all()
        for endpoint in endpoints:
            try:
                await self._reconcile(endpoint)
            except Exception:  # one endpoint's trouble must not stall the others
                log.exception("Reconciling endpoint %s failed; will retry", endpoint.name)
        present = {e.id for e in endpoints}
        for endpoint_id in [i for i in self._applied if i not in present]:
            del self._applied[endpoint_id]
        if self._jobs is not None:
            try:
                await self._jobs.reconcile_once()
            except Exception:  # the job registry may be briefly unreachable; endpoints go on regardless
                log.exception("Reconciling jobs failed; will retry")
        self.passes += 1

    async def _reconcile(self, endpoint: ModelEndpoint) -> None:
        if endpoint.status is EndpointStatus.DELETE_IN_PROGRESS:
            await self._orchestrator.delete(endpoint)
            await self._registry.remove(endpoint.id)
            self._applied.pop(endpoint.id, None)
            log.info("Endpoint %s deleted", endpoint.name)
            return
        # Before apply: a deployment re-adopted after a restart must not start a replica only to stop it again.
        asleep = should_sleep(endpoint, datetime.now(UTC), self._policy.idle_seconds)
        await self._orchestrator.set_asleep(endpoint, asleep)
        applied = self._applied.get(endpoint.id)
        if applied is None or applied.revision != endpoint.revision:
            if not await self._apply(endpoint):
                return
        elif applied.failed:
            if time.monotonic() - applied.at < self._policy.apply_retry_seconds or not await self._apply(endpoint):
                return  # the recorded UPDATE_FAILED stands until an apply of this revision succeeds
        state = await self._orchestrator.observe(endpoint)
        if state.missing and time.monotonic() - self._applied[endpoint.id].at >= self._policy.reapply_missing_seconds:
            log.info("Endpoint %s: %s", endpoint.name, state.reason)
            if not await self._apply(endpoint):
                return
            state = await self._orchestrator.observe(endpoint)
        if _differs(endpoint, state):
            await self._registry.record_observed(endpoint.id, endpoint.revision, state)

    async def _apply(self, endpoint: ModelEndpoint) -> bool:
        """Apply the endpoint's current revision; on failure record UPDATE_FAILED with the reason."""
        previous = self._applied.get(endpoint.id)
        if endpoint.status is EndpointStatus.UPDATE_PENDING and (previous is None or not previous.failed):
            await self._registry.set_status(endpoint.id, endpoint.revision, EndpointStatus.UPDATE_IN_PROGRESS, None)
        try:
            await self._orchestrator.apply(endpoint)
        except Exception as exc:  # whatever went wrong belongs in status_reason, not in a dead loop
            reason = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
            log.warning("Applying revision %d of endpoint %s failed: %s", endpoint.revision, endpoint.name, reason)
            self._applied[endpoint.id] = _Applied(endpoint.revision, time.monotonic(), failed=True)
            await self._registry.set_status(
                endpoint.id, endpoint.revision, EndpointStatus.UPDATE_FAILED, f"Could not apply the endpoint: {reason}"
            )
            return False
        self._applied[endpoint.id] = _Applied(endpoint.revision, time.monotonic())
        return True

    async def _wait(self) -> None:
        change = asyncio.ensure_future(self._orchestrator.wait_for_change(self._policy.interval_seconds))
        poke = asyncio.ensure_future(self._poked.wait())
        try:
            await asyncio.wait({change, poke}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            change.cancel()
            poke.cancel()
            # An orchestrator whose wait failed gets the next pass anyway; its error must not end the loop.
            await asyncio.gather(change, poke, return_exceptions=True)


def _differs(endpoint: ModelEndpoint, state: ObservedState) -> bool:
    return (endpoint.status, endpoint.status_reason, endpoint.available_workers, endpoint.unavailable_workers) != (
        state.status,
        state.reason,
        state.available_workers,
        state.unavailable_workers,
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
