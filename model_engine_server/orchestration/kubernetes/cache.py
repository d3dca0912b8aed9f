"""An in-memory mirror of the platform's objects, kept current by one watch thread per kind.

Each watcher lists once (label-selected), then watches from the list's resourceVersion. When a watch ends (server
timeout, dropped connection) it resumes from the last resourceVersion it saw; only when the server says that version is
gone (410 Gone) does it list again. Every change calls ``on_change`` (from the watcher's thread), which the orchestrator
bridges into asyncio for ``wait_for_change``. Reads (``get``, ``select``) are lock-protected and never touch the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from model_engine_server.domain.exceptions import OrchestrationError
from model_engine_server.orchestration.kubernetes.client import KubeApi, KubeRetryPolicy, Obj, Resource, iter_events

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Watcher:
    """List-then-watch loop for one kind, in its own daemon thread."""

    api: KubeApi
    resource: Resource
    label_selector: str
    timeout_seconds: int
    on_change: Callable[[], None]
    retry: KubeRetryPolicy
    synced: threading.Event = field(default_factory=threading.Event, init=False)
    error: str | None = field(default=None, init=False)  # last failure to list/watch, surfaced by observe()
    relists: int = field(default=0, init=False)  # how often a full list was needed (410 Gone or first start)
    _objects: dict[str, Obj] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _response: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{self.resource.plural}", daemon=True)

    # --- reads -----------------------------------------------------------------------------------------------------

    def get(self, name: str) -> Obj | None:
        with self._lock:
            return self._objects.get(name)

    def remember(self, obj: Obj) -> None:
        """Write-through of an object we just wrote, so observe() right after apply() does not see it missing.
        The watch event for the same write arrives later and replaces it (same content)."""
        with self._lock:
            self._objects[obj["metadata"]["name"]] = obj

    def forget(self, name: str) -> None:
        with self._lock:
            self._objects.pop(name, None)

    def select(self, labels: dict[str, str]) -> list[Obj]:
        with self._lock:
            return [
                obj
                for obj in self._objects.values()
                if all(obj.get("metadata", {}).get("labels", {}).get(k) == v for k, v in labels.items())
            ]

    # --- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # unblocks the read in the watcher thread
            except Exception:  # the connection may be half-closed already
                logger.debug("closing the %s watch failed", self.resource.plural, exc_info=True)
        self._thread.join(timeout)

    def _run(self) -> None:
        resource_version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist()
                resource_version = self._watch(resource_version)
                failures = 0
            except _Gone:
                resource_version = None
            except Exception as exc:  # a watcher must outlive any one bad response; it reports and retries
                if self._stopping.is_set():
                    return
                self.error = _describe(exc)
                logger.warning(
                    "watch of %s failed: %s", self.resource.plural, self.error, exc_info=not isinstance(exc, _EXPECTED)
                )
                self._stopping.wait(self.retry.delay(min(failures, 6)))
                failures += 1

    def _relist(self) -> str:
        body = self.api.list(self.resource, self.label_selector)
        items = {obj["metadata"]["name"]: obj for obj in body.get("items", [])}
        with self._lock:
            self._objects = items
        self.relists += 1
        self.error = None
        self.synced.set()
        self.on_change()
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, resource_version: str) -> str:
        """Stream events until the server ends the watch; returns the resourceVersion to resume from."""
        try:
            response = self.api.watch(self.resource, self.label_selector, resource_version, self.timeout_seconds)
        except ApiException as exc:
            if exc.status == 410:
                raise _Gone from exc
            raise
        self.error = None  # the watch is open again: the view is current
        self._response = response
        try:
            if self._stopping.is_set():
                return resource_version
            for event in iter_events(response):
                resource_version = self._handle(event, resource_version)
        finally:
            self._response = None
            response.release_conn()
        return resource_version

    def _handle(self, event: Obj, resource_version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise OrchestrationError(f"watch error: {obj.get('message')}")
        new_version = str(obj.get("metadata", {}).get("resourceVersion") or resource_version)
        if kind == "BOOKMARK":
            return new_version
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = obj
        self.error = None
        self.on_change()
        return new_version


_EXPECTED = (ApiException, OrchestrationError, urllib3.exceptions.HTTPError, OSError)


class _Gone(Exception):
    """The resourceVersion we watched from was compacted away: list again."""


def _describe(exc: Exception) -> str:
    if isinstance(exc, OrchestrationError):
        return exc.message
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return type(exc).__name__


class ObjectCache:
    """One ``Watcher`` per kind; ``synced`` once every kind has been listed."""

    def __init__(
        self,
        api: KubeApi,
        resources: list[Resource],
        label_selector: str,
        timeout_seconds: int,
        on_change: Callable[[], None],
        retry: KubeRetryPolicy,
    ) -> None:
        self.watchers = {r.kind: Watcher(api, r, label_selector, timeout_seconds, on_change, retry) for r in resources}

    def start(self) -> None:
        for watcher in self.watchers.values():
            watcher.start()

    def stop(self) -> None:
        for watcher in self.watchers.values():
            watcher.stop()

    @property
    def synced(self) -> bool:
        return all(w.synced.is_set() for w in self.watchers.values())

    def errors(self) -> list[str]:
        return [f"{w.resource.plural}: {w.error}" for w in self.watchers.values() if w.error]

    def watching(self, resource: Resource) -> bool:
        return resource.kind in self.watchers

    def get(self, resource: Resource, name: str) -> Obj | None:
        return self.watchers[resource.kind].get(name)

    def select(self, resource: Resource, labels: dict[str, str]) -> list[Obj]:
        return self.watchers[resource.kind].select(labels)

    def remember(self, resource: Resource, obj: Obj) -> None:
        if resource.kind in self.watchers and obj.get("metadata", {}).get("name"):
            self.watchers[resource.kind].remember(obj)

    def forget(self, resource: Resource, name: str) -> None:
        if resource.kind in self.watchers:
            self.watchers[resource.kind].forget(name)
