"""The control plane: the registry, the orchestrator (who runs replicas) and the reconciler, started and stopped
together, plus the upstream resolver a gateway in the same process routes with."""

from __future__ import annotations

from model_engine_server.config import Settings
from model_engine_server.db.registry import Registry
from model_engine_server.domain.ports import Orchestrator
from model_engine_server.orchestration.factory import build_orchestrator, build_upstream_resolver
from model_engine_server.orchestration.job_hooks import build_job_reconciler
from model_engine_server.orchestration.reconciler import ReconcilePolicy, Reconciler


class ControlPlane:
    """The registry, the orchestrator and the reconciler, started and stopped together; ``resolver`` is where a
    gateway in this process sends requests (the running orchestrator's own view on one machine)."""

    def __init__(self, settings: Settings, orchestrator: Orchestrator | None = None) -> None:
        self.settings = settings
        self._database = Registry(settings.database_url)
        self.registry = self._database.endpoints
        self.orchestrator = orchestrator or build_orchestrator(settings)
        self.resolver = build_upstream_resolver(settings, self.orchestrator)
        self.jobs = build_job_reconciler(settings, self._database, self.orchestrator)
        self.reconciler = self.new_reconciler()
        self._started = False

    def new_reconciler(self) -> Reconciler:
        policy = ReconcilePolicy(
            self.settings.reconcile_interval_seconds, idle_seconds=self.settings.scale_to_zero_idle_seconds
        )
        return Reconciler(self.registry, self.orchestrator, policy, jobs=self.jobs)

    async def start(self) -> None:
        await self.orchestrator.start()
        self._started = True

    async def close(self) -> None:
        """Stop the orchestrator (on one machine: every inference server) and release the database."""
        if self._started:
            await self.jobs.runner.close()
            await self.orchestrator.close()
            self._started = False
        await self._database.close()
