"""Leader election for the reconciler with a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

One replica holds the Lease and renews it every ``retry_period``; the others poll. A Lease counts as expired when its
record (holder, renewTime) has not changed for ``lease_duration`` seconds *by our own monotonic clock* — so clock skew
between nodes cannot make two replicas leaders. Writes use optimistic concurrency (``resourceVersion``): of two
replicas racing for an expired Lease, exactly one update succeeds.

Usage (``model-engine orchestrator`` with replicas > 1)::

    elector = LeaseLeaderElector(api, settings.kubernetes_leader_lease_name, identity=hostname)
    await elector.acquire()                 # blocks until this replica leads
    async with asyncio.TaskGroup() as tg:   # run the reconciler while renewing; stop when leadership is lost
        ...
    await elector.release()                 # on shutdown: lets another replica take over at once
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from model_engine_server.orchestration.kubernetes.client import LEASES, KubeApi, Obj

logger = logging.getLogger(__name__)

LEASE_DURATION_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10
RETRY_PERIOD_SECONDS = 2.0


def _now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(eq=False)
class LeaseLeaderElector:
    api: KubeApi
    name: str
    identity: str
    lease_duration: int = LEASE_DURATION_SECONDS
    renew_deadline: float = RENEW_DEADLINE_SECONDS
    retry_period: float = RETRY_PERIOD_SECONDS
    monotonic: Callable[[], float] = time.monotonic
    is_leader: bool = field(default=False, init=False)
    # The Lease record (holder, renewTime) last seen, and when by our clock: it expires by our clock, not theirs.
    _observed: tuple[str | None, str | None] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)

    # --- one attempt (sync; runs in a thread) ----------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        lease = self.api.read(LEASES, self.name)
        now = _now_micro()
        if lease is None:
            created = self.api.create(LEASES, self._body(None, now, now, transitions=0))
            self.is_leader = created is not None
            return self.is_leader
        spec = lease.get("spec", {}) or {}
        holder = spec.get("holderIdentity") or None
        record = (holder, spec.get("renewTime"))
        if record != self._observed:
            self._observed, self._observed_at = record, self.monotonic()
        duration = int(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = self.monotonic() - self._observed_at > duration
        if holder not in (None, self.identity) and not expired:
            self.is_leader = False
            return False
        ours = holder == self.identity
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquired = spec.get("acquireTime") if ours else now
        body = self._body(lease["metadata"].get("resourceVersion"), acquired, now, transitions)
        replaced = self.api.replace(LEASES, body)
        self.is_leader = replaced is not None
        if replaced is not None:
            replaced_spec = replaced.get("spec", {}) or {}
            self._observed = (replaced_spec.get("holderIdentity"), replaced_spec.get("renewTime"))
            self._observed_at = self.monotonic()
        return self.is_leader

    def release_now(self) -> None:
        """Give the Lease up (holder cleared) if we hold it, so a standby need not wait for expiry."""
        lease = self.api.read(LEASES, self.name)
        if lease is None or (lease.get("spec", {}) or {}).get("holderIdentity") != self.identity:
            self.is_leader = False
            return
        spec = dict(lease["spec"])
        spec["holderIdentity"] = None
        spec["leaseDurationSeconds"] = 1
        self.api.replace(
            LEASES,
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.api.namespace,
                    "resourceVersion": lease["metadata"].get("resourceVersion"),
                },
                "spec": spec,
            },
        )
        self.is_leader = False

    def _body(self, resource_version: str | None, acquired: str | None, renewed: str, transitions: int) -> Obj:
        metadata: Obj = {"name": self.name, "namespace": self.api.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_duration,
                "acquireTime": acquired,
                "renewTime": renewed,
                "leaseTransitions": transitions,
            },
        }

    # --- loops (async) ---------------------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        while not await asyncio.to_thread(self.try_acquire_or_renew):
            await asyncio.sleep(self.retry_period)
        logger.info("%s leads (lease %s)", self.identity, self.name)

    async def keep_renewing(self) -> None:
        """Renew every ``retry_period``; return when a renewal has not succeeded within ``renew_deadline``."""
        last_success = self.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                renewed = await asyncio.to_thread(self.try_acquire_or_renew)
            except Exception:  # API outages count against the deadline, not as crashes
                logger.warning("renewing lease %s failed", self.name, exc_info=True)
                renewed = False
            if renewed:
                last_success = self.monotonic()
            elif not self.is_leader or self.monotonic() - last_success > self.renew_deadline:
                self.is_leader = False
                logger.warning("%s lost the lease %s", self.identity, self.name)
                return

    async def release(self) -> None:
        await asyncio.to_thread(self.release_now)
