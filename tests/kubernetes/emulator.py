"""A small Kubernetes API server emulator on aiohttp, for driving the official client over real HTTP.

Why not kmock's ``KubernetesEmulator`` (kmock==0.8, read in full): it stores objects as merged JSON but has no
resourceVersions (so no watch resumption or 410 Gone), no label selectors on list/watch, no server-side apply (a PATCH
of an absent object is a 404 there, while apply creates it), no uids, generations or ownerReference garbage
collection, and no optimistic-concurrency conflicts — each of which the orchestrator relies on. Overriding all of
that meant replacing its handlers wholesale, so this module implements the few API semantics we need directly:

- namespaced list / get / create / replace (409 on a stale resourceVersion) / delete (ownerReference cascade);
- PATCH with ``application/apply-patch+yaml`` (upsert; ``fieldManager`` required; the single manager's fields replace
  the previous ones), merge patch and strategic merge patch (deep merge), and the ``/status`` subresource;
- watches from a resourceVersion with replay of the history, label selectors, ``timeoutSeconds``, and ``410 Gone``
  once the history was ``compact()``-ed;
- EndpointSlices (discovery.k8s.io/v1) like any other kind, written by the test-side EndpointSlice controller in
  ``tests/kubernetes/endpoint_slices.py`` from Services and pods;
- fault injection (``fail``: any status for N matching requests; ``drop``: close the connection without answering;
  ``drop_watches``: cut every open watch) and a request log for RBAC checks.

Everything runs on the test's event loop; test code mutates state through the same methods the handlers use.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # (group, plural, namespace, name)

KINDS = {
    ("", "pods"): "Pod",
    ("", "services"): "Service",
    ("apps", "deployments"): "Deployment",
    ("apps", "replicasets"): "ReplicaSet",
    ("autoscaling", "horizontalpodautoscalers"): "HorizontalPodAutoscaler",
    ("policy", "poddisruptionbudgets"): "PodDisruptionBudget",
    ("keda.sh", "scaledobjects"): "ScaledObject",
    ("coordination.k8s.io", "leases"): "Lease",
    ("batch", "jobs"): "Job",
    ("discovery.k8s.io", "endpointslices"): "EndpointSlice",
}
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class Fault:
    method: str
    path: str  # substring of the request path
    times: int
    status: int | None  # None: drop the connection
    message: str = ""
    query: str = ""  # substring of the query string


@dataclass
class RecordedRequest:
    method: str
    group: str
    plural: str
    name: str | None
    subresource: str | None
    watch: bool
    content_type: str
    status: int = 0


@dataclass
class _Watch:
    group: str
    plural: str
    namespace: str
    selector: Callable[[Obj], bool]
    queue: asyncio.Queue[Obj | None] = field(default_factory=asyncio.Queue)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_selector(text: str) -> Callable[[Obj], bool]:
    """Equality-based label selectors: ``a=b,c!=d,e`` (what the orchestrator and kubectl send)."""
    clauses = [c.strip() for c in text.split(",") if c.strip()]

    def matches(obj: Obj) -> bool:
        labels = obj.get("metadata", {}).get("labels", {}) or {}
        for clause in clauses:
            if "!=" in clause:
                k, v = clause.split("!=", 1)
                if labels.get(k) == v:
                    return False
            elif "=" in clause:
                k, v = clause.split("=", 1)
                if labels.get(k) != v.lstrip("="):
                    return False
            elif clause not in labels:
                return False
        return True

    return matches


def _deep_merge(base: Any, patch: Any) -> Any:
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _deep_merge(base.get(key), value)
    return merged


class KubeEmulator:
    def __init__(self) -> None:
        self.objects: dict[Key, Obj] = {}
        self.revision = 100
        self.history: list[tuple[int, str, str, Obj]] = []  # (rv, group, plural, event)
        self.compacted_before = 0
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self._watches: list[_Watch] = []
        self._watch_transports: set[Any] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- server ----------------------------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware])
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            base = prefix + "/namespaces/{namespace}/{plural}"
            app.router.add_route("*", base, self._collection)
            app.router.add_route("*", base + "/{name}", self._item)
            app.router.add_route("*", base + "/{name}/{subresource}", self._item)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        info = request.match_info
        record = RecordedRequest(
            method=request.method,
            group=info.get("group", ""),
            plural=info.get("plural", ""),
            name=info.get("name"),
            subresource=info.get("subresource"),
            watch=request.query.get("watch") in ("true", "1", "True"),
            content_type=request.headers.get("Content-Type", ""),
        )
        self.requests.append(record)
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method == request.method
                and fault.path in request.path
                and fault.query in request.query_string
            ):
                fault.times -= 1
                if fault.status is None:
                    assert request.transport is not None
                    request.transport.abort()  # the client sees the connection drop without a response
                    record.status = -1
                    return web.Response(status=500)
                record.status = fault.status
                return _status(fault.status, fault.message or f"injected HTTP {fault.status}")
        response: web.StreamResponse = await handler(request)
        record.status = response.status
        return response

    # --- fault injection and test helpers --------------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, times: int = 1, message: str = "", query: str = "") -> None:
        self.faults.append(Fault(method, path, times, status, message, query))

    def drop(self, method: str, path: str, times: int = 1, query: str = "") -> None:
        self.faults.append(Fault(method, path, times, None, query=query))

    def drop_watches(self) -> None:
        """Cut every open watch connection, as a restarting API server or a flaky load balancer would."""
        for transport in list(self._watch_transports):
            transport.abort()
        self._watch_transports.clear()
        for watch in self._watches:
            watch.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the event history: resuming a watch from any earlier resourceVersion now gets 410 Gone."""
        self.compacted_before = self.revision + 1
        self.history.clear()

    def get(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        obj = self.objects.get((group, plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, group: str, plural: str, namespace: str) -> list[Obj]:
        return [
            copy.deepcopy(o)
            for (g, p, ns, _), o in sorted(self.objects.items())
            if (g, p, ns) == (group, plural, namespace)
        ]

    def put(self, group: str, plural: str, namespace: str, obj: Obj) -> Obj:
        """Create or overwrite an object (test side: a kubelet writing a pod, a controller writing status)."""
        name = obj["metadata"]["name"]
        key = (group, plural, namespace, name)
        existing = self.objects.get(key)
        if existing is None:
            return self._create(key, obj)
        merged = copy.deepcopy(obj)
        merged["metadata"] = {**existing["metadata"], **obj.get("metadata", {})}
        return self._store(key, merged, "MODIFIED", bump_generation="spec" in obj and obj["spec"] != existing["spec"])

    def patch(self, group: str, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        key = (group, plural, namespace, name)
        existing = self.objects[key]
        merged = _deep_merge(existing, patch)
        changed = merged.get("spec") != existing.get("spec")
        return self._store(key, merged, "MODIFIED", bump_generation=changed)

    def remove(self, group: str, plural: str, namespace: str, name: str, cascade: bool = True) -> None:
        self._delete((group, plural, namespace, name), cascade)

    # --- storage ---------------------------------------------------------------------------------------------------

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _emit(self, key: Key, event_type: str, obj: Obj) -> None:
        group, plural, namespace, _ = key
        event = {"type": event_type, "object": copy.deepcopy(obj)}
        self.history.append((int(obj["metadata"]["resourceVersion"]), group, plural, event))
        for watch in self._watches:
            if (watch.group, watch.plural, watch.namespace) == (group, plural, namespace) and watch.selector(obj):
                watch.queue.put_nowait(event)

    def _create(self, key: Key, obj: Obj) -> Obj:
        group, plural, namespace, name = key
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta.update(
            name=name,
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            generation=1,
            resourceVersion=self._next_revision(),
        )
        stored.setdefault("kind", KINDS.get((group, plural), plural))
        self.objects[key] = stored
        self._emit(key, "ADDED", stored)
        return copy.deepcopy(stored)

    def _store(self, key: Key, obj: Obj, event_type: str, bump_generation: bool) -> Obj:
        meta = obj["metadata"]
        if bump_generation:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_revision()
        self.objects[key] = obj
        self._emit(key, event_type, obj)
        return copy.deepcopy(obj)

    def _delete(self, key: Key, cascade: bool) -> Obj:
        obj = self.objects.pop(key)
        obj["metadata"]["resourceVersion"] = self._next_revision()
        self._emit(key, "DELETED", obj)
        if cascade:  # the garbage collector, done at once
            uid = obj["metadata"]["uid"]
            for other_key, other in list(self.objects.items()):
                owners = other.get("metadata", {}).get("ownerReferences", []) or []
                if other_key[2] == key[2] and any(o.get("uid") == uid for o in owners) and other_key in self.objects:
                    self._delete(other_key, cascade=True)
        return obj

    # --- handlers --------------------------------------------------------------------------------------------------

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        group, plural, namespace = (
            request.match_info.get("group", ""),
            request.match_info["plural"],
            request.match_info["namespace"],
        )
        if request.method == "GET":
            selector = parse_selector(request.query.get("labelSelector", ""))
            if request.query.get("watch") in ("true", "1", "True"):
                return await self._watch(request, group, plural, namespace, selector)
            items = [o for o in self.list(group, plural, namespace) if selector(o)]
            return web.json_response(
                {
                    "kind": KINDS.get((group, plural), plural) + "List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.revision)},
                    "items": items,
                }
            )
        if request.method == "POST":
            body = await request.json()
            name = body.get("metadata", {}).get("name", "")
            if (group, plural, namespace, name) in self.objects:
                return _status(409, f'{plural} "{name}" already exists', reason="AlreadyExists")
            return web.json_response(self._create((group, plural, namespace, name), body), status=201)
        return _status(405, "method not allowed")

    async def _item(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        group, plural, namespace, name = info.get("group", ""), info["plural"], info["namespace"], info["name"]
        sub = info.get("subresource")
        key = (group, plural, namespace, name)
        existing = self.objects.get(key)
        if request.method == "GET":
            return web.json_response(existing) if existing else _not_found(plural, name)
        if request.method == "DELETE":
            if existing is None:
                return _not_found(plural, name)
            cascade = request.query.get("propagationPolicy", "Background") != "Orphan"
            return web.json_response(self._delete(key, cascade))
        if request.method == "PUT":
            body = await request.json()
            # Read again after the await: another request may have replaced it meanwhile (the API server's
            # compare-and-swap on resourceVersion is atomic).
            existing = self.objects.get(key)
            if existing is None:
                return _not_found(plural, name)
            sent_version = body.get("metadata", {}).get("resourceVersion")
            if sent_version and sent_version != existing["metadata"]["resourceVersion"]:
                return _status(
                    409,
                    f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    reason="Conflict",
                )
            if sub == "status":
                updated = {**existing, "status": body.get("status", {})}
                return web.json_response(self._store(key, updated, "MODIFIED", bump_generation=False))
            updated = {**body, "metadata": {**existing["metadata"], **_user_metadata(body)}}
            if "status" in existing:
                updated["status"] = existing["status"]
            changed = updated.get("spec") != existing.get("spec")
            return web.json_response(self._store(key, updated, "MODIFIED", bump_generation=changed))
        if request.method == "PATCH":
            return await self._patch(request, key, existing, sub)
        return _status(405, "method not allowed")

    async def _patch(self, request: web.Request, key: Key, existing: Obj | None, sub: str | None) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        body = json.loads(await request.text())
        plural, name = key[1], key[3]
        if content_type.startswith("application/apply-patch"):
            if not request.query.get("fieldManager"):
                return _status(400, "PATCH for apply requires fieldManager", reason="BadRequest")
            if not body.get("apiVersion") or not body.get("kind"):
                return _status(400, "apply body must set apiVersion and kind", reason="BadRequest")
            if len(name) > 63 or not _DNS_1123.match(name):
                return _status(
                    422, f'{plural} "{name}" is invalid: metadata.name must be a DNS-1123 label', reason="Invalid"
                )
            if existing is None:
                return web.json_response(self._create(key, body), status=201)
            # One field manager owns everything it applies: its new intent replaces its old one.
            updated = copy.deepcopy(existing)
            for section, value in body.items():
                if section in ("metadata", "status"):
                    continue
                updated[section] = copy.deepcopy(value)
            for field_name in ("labels", "annotations", "ownerReferences"):
                if field_name in body.get("metadata", {}):
                    updated["metadata"][field_name] = copy.deepcopy(body["metadata"][field_name])
            changed = updated.get("spec") != existing.get("spec")
            if updated == existing:
                return web.json_response(existing)  # a no-op apply writes nothing, like the real server
            return web.json_response(self._store(key, updated, "MODIFIED", bump_generation=changed))
        if existing is None:
            return _not_found(plural, name)
        patch = {"status": body.get("status", {})} if sub == "status" else body
        merged = _deep_merge(existing, patch)
        changed = merged.get("spec") != existing.get("spec")
        return web.json_response(self._store(key, merged, "MODIFIED", bump_generation=changed))

    async def _watch(
        self, request: web.Request, group: str, plural: str, namespace: str, selector: Callable[[Obj], bool]
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        transport = request.transport
        self._watch_transports.add(transport)
        start = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "300"))
        watch = _Watch(group, plural, namespace, selector)
        try:
            if start and start != "0" and int(start) < self.compacted_before:
                gone = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 410,
                    "reason": "Expired",
                    "message": f"too old resource version: {start}",
                }
                await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                return response
            if start and start != "0":
                backlog = [
                    e
                    for rv, g, p, e in self.history
                    if rv > int(start)
                    and (g, p) == (group, plural)
                    and e["object"]["metadata"].get("namespace") == namespace
                    and selector(e["object"])
                ]
            else:
                backlog = [{"type": "ADDED", "object": o} for o in self.list(group, plural, namespace) if selector(o)]
            self._watches.append(watch)
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watch.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            return response
        except (ConnectionResetError, RuntimeError):
            return response
        finally:
            if watch in self._watches:
                self._watches.remove(watch)
            self._watch_transports.discard(transport)

    def open_watches(self, plural: str) -> int:
        return sum(1 for w in self._watches if w.plural == plural)


def _user_metadata(body: Obj) -> Obj:
    meta = body.get("metadata", {}) or {}
    return {k: v for k, v in meta.items() if k in ("labels", "annotations", "ownerReferences")}


def _status(code: int, message: str, reason: str = "") -> web.Response:
    return web.json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason or "InternalError",
            "code": code,
        },
        status=code,
    )


def _not_found(plural: str, name: str) -> web.Response:
    return _status(404, f'{plural} "{name}" not found', reason="NotFound")
