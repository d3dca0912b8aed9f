"""Interfaces the domain needs from the outside world; ``db/`` and ``orchestration/*`` implement them."""

from __future__ import annotations

from typing import Protocol

from model_engine_server.domain.entities import EndpointConfig, ModelEndpoint, ObservedState
from model_engine_server.domain.jobs import Job, RunObservation


class Orchestrator(Protocol):
    """Turns endpoint records into running inference servers and reports what actually runs.

    Implementations: ``orchestration.local.LocalOrchestrator`` (processes on this machine) and
    ``orchestration.kubernetes.KubernetesOrchestrator`` (Deployments through the Kubernetes API).
    """

    async def start(self) -> None:
        """Connect, start watches or supervisors. Called once from the application's lifespan."""

    async def close(self) -> None:
        """Stop background work and release connections (local servers are stopped on shutdown)."""

    async def apply(self, endpoint: ModelEndpoint) -> None:
        """Create or update the servers of ``endpoint`` so they match its config (idempotent)."""

    async def delete(self, endpoint: ModelEndpoint) -> None:
        """Remove everything that runs for ``endpoint`` (idempotent; absent is fine)."""

    async def observe(self, endpoint: ModelEndpoint) -> ObservedState:
        """What runs for ``endpoint`` right now. Cheap: served from a watch-fed cache or in-process state."""

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        """Base URLs (``http://host:port``) the gateway may send requests for ``endpoint`` to, ready ones only."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when something observed may have changed, or after ``timeout`` seconds at the latest."""


class UpstreamResolver(Protocol):
    """Where requests for an endpoint go right now (the gateway and the async worker ask on every request)."""

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        """Base URLs (``http://host:port``) of the endpoint's ready replicas; empty when none is ready."""


class InferenceEndpoints(Protocol):
    """The registry as admission reads it (``db.repositories.EndpointRegistry``)."""

    async def get_for_inference(self, name: str, caller: str) -> ModelEndpoint:
        """The endpoint if ``caller`` may send it requests; else ``EndpointNotFoundError``."""

    async def get_by_id(self, endpoint_id: str) -> ModelEndpoint | None: ...


class EndpointRepository(Protocol):
    """The registry of endpoints, as the endpoint operations need it (``db.repositories.EndpointRegistry``)."""

    async def create(self, *, owner: str, name: str, config: EndpointConfig) -> ModelEndpoint: ...

    async def get_owned(self, name: str, owner: str) -> ModelEndpoint: ...

    async def update_config(self, name: str, owner: str, config: EndpointConfig) -> ModelEndpoint: ...

    async def mark_deleting(self, name: str, owner: str) -> ModelEndpoint: ...


class JobRunner(Protocol):
    """Runs a job's workers (``domain.jobs``): ``job.parallelism`` of them, worker ``i`` with
    ``JOB_COMPLETION_INDEX=i`` running ``model-engine <JOB_ENTRYPOINTS[job.kind]> --job-id <id>``.

    Implementations: ``orchestration.local.jobs.LocalJobRunner`` (supervised processes) and
    ``orchestration.kubernetes.jobs.KubernetesJobRunner`` (an indexed ``batch/v1`` Job). Only the reconciler calls the
    write side; every call is idempotent.
    """

    async def start_job(self, job: Job) -> None:
        """Start the workers (replacing any left from an earlier attempt; they resume from the workspace)."""

    async def stop_job(self, job: Job) -> None:
        """Stop every worker and remove what runs for the job (absent is fine)."""

    async def observe_job(self, job: Job) -> RunObservation:
        """What runs for the job right now. Cheap: in-process state or a watch-fed cache."""

    async def close(self) -> None:
        """Release connections; on one machine, stop the workers (a later start resumes them)."""
