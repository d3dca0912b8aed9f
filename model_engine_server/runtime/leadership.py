"""``model-engine orchestrator``: the reconciler and orchestrator alone; on Kubernetes with several replicas, only
the holder of the Lease reconciles."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from model_engine_server.config import OrchestratorKind, Settings
from model_engine_server.runtime.aio import cancel, first_of, run_until, stop_signals
from model_engine_server.runtime.control_plane import ControlPlane

log = logging.getLogger(__name__)


async def run_orchestrator(settings: Settings) -> None:
    """``model-engine orchestrator``: reconcile until SIGINT/SIGTERM; on Kubernetes only while holding the Lease."""
    stop = asyncio.Event()
    control = ControlPlane(settings)
    with stop_signals(lambda _sig: stop.set()):
        try:
            await control.start()
            if settings.orchestrator is OrchestratorKind.KUBERNETES:
                await reconcile_while_leading(settings, control, stop)
            else:
                await run_until(control.reconciler.run(), stop)
        finally:
            await control.close()


async def reconcile_while_leading(
    settings: Settings, control: ControlPlane, stop: asyncio.Event, identity: str | None = None
) -> None:
    """Reconcile only while holding the Lease; stand by otherwise; give the Lease up when ``stop`` is set."""
    from model_engine_server.orchestration.kubernetes import KubernetesOrchestrator
    from model_engine_server.orchestration.kubernetes.leader import LeaseLeaderElector

    if not isinstance(control.orchestrator, KubernetesOrchestrator):
        await run_until(control.reconciler.run(), stop)
        return
    identity = identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    elector = LeaseLeaderElector(control.orchestrator.api, settings.kubernetes_leader_lease_name, identity)
    try:
        while not stop.is_set():
            log.info("%s waiting to lead (lease %s)", identity, settings.kubernetes_leader_lease_name)
            if not await run_until(elector.acquire(), stop):
                return
            # A fresh reconciler per term: the previous leader may have changed things meanwhile.
            reconciler = control.new_reconciler()
            renewing = asyncio.create_task(elector.keep_renewing())
            await run_until(first_of(reconciler.run(), renewing), stop)
            await cancel(renewing)
    finally:
        if elector.is_leader:
            await elector.release()
