"""The domain's errors. Adapters translate their own failures into these; ``api/errors.py`` maps them to HTTP once.

DomainError
├── InvalidRequestError          the request is well-formed but not acceptable (400)
├── NotFoundError                no such object visible to the caller (404)
│   ├── EndpointNotFoundError
│   └── EndpointDeletingError    being deleted: it will not serve again
├── ConflictError                it exists already / conflicting state (409)
├── PayloadTooLargeError         an upload past the size limit (413)
├── AuthenticationError          no or unknown credentials (401)
├── ForbiddenError               known caller, not allowed (403)
├── EndpointNotReadyError        the endpoint cannot serve right now (503, with the reason)
│   ├── EndpointWakeTimeoutError waited the cold-start bound for a replica (503 with Retry-After)
│   └── EndpointWakingError      woken, no replica yet, for a caller that comes back later (a queued task)
├── OverloadedError              upstream or queue is full (429)
│   └── RateLimitExceededError   a tenant's limit or quota (429 with Retry-After)
├── UpstreamError                an inference server failed or answered badly (502/504)
│   └── UpstreamTimeoutError
├── BrokerUnavailableError       the task broker cannot be reached (503)
└── OrchestrationError           the orchestrator could not carry out a change
    └── PermissionDeniedError    the platform itself lacks a permission (e.g. Kubernetes RBAC)
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the platform raises on purpose. ``message`` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(DomainError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault, when one is (OpenAI's error envelope names it)


class NotFoundError(DomainError):
    pass


class EndpointNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Model endpoint {name!r} was not found.")
        self.name = name


class EndpointDeletingError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Model endpoint {name!r} is being deleted.")
        self.name = name


class ConflictError(DomainError):
    pass


class AuthenticationError(DomainError):
    pass


class EndpointNotReadyError(DomainError):
    """503; ``retry_after`` (seconds) when the caller should try again later (an endpoint still waking up)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EndpointWakeTimeoutError(EndpointNotReadyError):
    """A request waited the whole cold-start bound for an endpoint waking from zero workers (503, Retry-After)."""


class EndpointWakingError(EndpointNotReadyError):
    """The endpoint was woken but has no ready replica yet, within the cold-start bound: come back shortly. Only
    callers that asked not to wait get it (the async worker); it is never a failure of the request."""


class OverloadedError(DomainError):
    pass


class UpstreamError(DomainError):
    def __init__(self, message: str, status_code: int = 502) -> None:
        super().__init__(message)
        self.status_code = status_code


class UpstreamTimeoutError(UpstreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=504)


class BrokerUnavailableError(DomainError):
    pass


class OrchestrationError(DomainError):
    pass


class PermissionDeniedError(OrchestrationError):
    pass


class PayloadTooLargeError(DomainError):
    """The upload is larger than the configured limit (413)."""


class RequestTimeoutError(DomainError):
    """The client stopped sending its request body (408)."""


class RateLimitExceededError(OverloadedError):
    """A tenant went past one of its limits (429 with ``Retry-After``); ``limit`` names it."""

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after = retry_after


class ForbiddenError(DomainError):
    """The caller is known but may not do this (403), e.g. a tenant managing another tenant's keys."""
