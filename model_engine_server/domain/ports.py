"""Interfaces the domain needs from the outside world; ``db/`` and ``orchestration/*`` implement them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from model_engine_server.domain.entities import (
    ApiKey,
    AsyncTaskRecord,
    EndpointConfig,
    EndpointOrder,
    EndpointStatus,
    KeyIdentity,
    ModelEndpoint,
    ObservedState,
)
from model_engine_server.domain.jobs import Job, RunObservation


class Orchestrator(Protocol):
    """Who runs replicas: turns endpoint records into running inference servers and reports what actually runs.

    Implementations: ``orchestration.local.LocalOrchestrator`` (processes on this machine) and
    ``orchestration.kubernetes.KubernetesOrchestrator`` (Deployments through the Kubernetes API). Only the process
    that runs the reconciler builds one (``runtime.ControlPlane``); where requests go is ``UpstreamResolver``'s job.
    """

    async def start(self) -> None:
        """Connect, start watches or supervisors. ``ControlPlane.start`` calls it once, before the reconciler runs."""

    async def close(self) -> None:
        """Stop background work and release connections (local servers are stopped on shutdown)."""

    async def apply(self, endpoint: ModelEndpoint) -> None:
        """Create or update the servers of ``endpoint`` so they match its config (idempotent)."""

    async def delete(self, endpoint: ModelEndpoint) -> None:
        """Remove everything that runs for ``endpoint`` (idempotent; absent is fine)."""

    async def observe(self, endpoint: ModelEndpoint) -> ObservedState:
        """What runs for ``endpoint`` right now. Cheap: served from a watch-fed cache or in-process state."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when something observed may have changed, or after ``timeout`` seconds at the latest."""

    async def set_asleep(self, endpoint: ModelEndpoint, asleep: bool) -> None:
        """Scale to zero (``asleep``) or back to at least one replica. The reconciler calls it on every pass for
        every applied endpoint (``domain.autoscaling.should_sleep``), so it must be cheap and idempotent."""


class UpstreamResolver(Protocol):
    """Where requests for an endpoint go right now (the gateway and the async worker ask on every request).

    Implementations (``orchestration.factory.build_upstream_resolver`` picks one): the ``LocalOrchestrator`` running
    in this process; ``LocalReplicaDirectory`` (its state file, read from another process);
    ``KubernetesPodResolver`` (ready pods from EndpointSlices) and ``KubernetesServiceResolver`` (the Service URL).
    """

    async def upstreams(self, endpoint: ModelEndpoint) -> list[str]:
        """Base URLs (``http://host:port``) of the endpoint's ready replicas; empty when none is ready."""


class InferenceEndpoints(Protocol):
    """The registry as admission reads it (``db.repositories.EndpointRegistry``)."""

    async def get_for_inference(self, name: str, caller: str) -> ModelEndpoint:
        """The endpoint if ``caller`` may send it requests; else ``EndpointNotFoundError``."""

    async def list_for_inference(self, caller: str) -> list[ModelEndpoint]:
        """Every endpoint ``caller`` may send requests to (its own and the public ones), by name."""

    async def get_by_id(self, endpoint_id: str) -> ModelEndpoint | None: ...

    async def record_demand(self, endpoint_id: str, at: datetime) -> None:
        """A request for the endpoint arrived at ``at`` (``last_request_at`` only moves forward)."""


class EndpointRepository(Protocol):
    """The registry of endpoints, as the endpoint operations and routes use it."""

    async def create(self, *, owner: str, name: str, config: EndpointConfig) -> ModelEndpoint: ...

    async def get_owned(self, name: str, owner: str) -> ModelEndpoint: ...

    async def list_owned(
        self, owner: str, *, name: str | None = None, order_by: EndpointOrder = EndpointOrder.NEWEST
    ) -> list[ModelEndpoint]: ...

    async def update_config(self, name: str, owner: str, config: EndpointConfig) -> ModelEndpoint: ...

    async def mark_deleting(self, name: str, owner: str) -> ModelEndpoint: ...


class ObservedEndpoints(Protocol):
    """The registry as the reconciler reads and writes it: every endpoint, and what runs for each."""

    async def list_all(self) -> list[ModelEndpoint]: ...

    async def set_status(self, endpoint_id: str, revision: int, status: EndpointStatus, reason: str | None) -> bool:
        """Set the status of ``revision``; False when a newer revision or a pending delete won."""

    async def record_observed(self, endpoint_id: str, revision: int, state: ObservedState) -> bool: ...

    async def remove(self, endpoint_id: str) -> None: ...


class EndpointStore(EndpointRepository, InferenceEndpoints, ObservedEndpoints, Protocol):
    """The whole endpoint registry (what ``db.Registry.endpoints`` is)."""


class ApiKeys(Protocol):
    """API keys, stored hashed (``db.repositories.ApiKeyStore``)."""

    async def authenticate(self, key: str) -> str | None:
        """The owner of ``key``, or None when it is unknown, revoked or expired."""

    async def store(
        self, key: str, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> ApiKey: ...

    async def create(
        self, owner: str, description: str = "", *, admin: bool = False, expires_at: datetime | None = None
    ) -> tuple[str, ApiKey]:
        """A new random key (returned once) and its record."""

    async def identify(self, key_hash: str) -> KeyIdentity | None:
        """Who the key with this SHA-256 acts as, or None when it is unknown or revoked."""

    async def list(self, owner: str | None = None) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, owner: str | None = None) -> ApiKey:
        """Revoke (only ``owner``'s key when given, else ``NotFoundError``); every gateway is notified."""


class AsyncTaskRecords(Protocol):
    """Ownership and expiry of async tasks (``db.repositories.AsyncTaskStore``)."""

    async def create(self, task_id: str, owner: str, endpoint: ModelEndpoint, ttl: timedelta) -> AsyncTaskRecord: ...

    async def get_owned(self, task_id: str, owner: str) -> AsyncTaskRecord:
        """The task if ``owner`` submitted it and it has not expired; else ``NotFoundError``."""

    async def delete(self, task_id: str) -> None: ...

    async def owner_of(self, task_id: str) -> str | None: ...

    async def delete_expired(self) -> int: ...


class HealthCheck(Protocol):
    async def check(self) -> None:
        """Return when the dependency answers a real round trip; raise (any exception) when it does not."""


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
