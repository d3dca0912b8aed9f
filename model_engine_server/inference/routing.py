"""Which replica a completion goes to: least outstanding requests, prefix-cache affinity, failed replicas skipped.

The policy itself is ``order_replicas``, a pure function of what this process knows (its in-flight counts, the
replicas whose last request failed to connect, the replica that served the prompt's prefix last); ``ReplicaRouter``
keeps that knowledge and the per-replica metrics.

Counts are this process's own. Each gateway replica balances its own traffic, and the Service in front of the gateways
spreads callers over them evenly, so per-gateway least-load approximates global least-load without any coordination
on the request path (a shared counter in Redis would add a round trip to every request and a failure mode to routing).

Prefix affinity hashes the prompt in fixed-size character blocks, each hash chained to the one before, so two prompts
share the hash of block ``i`` exactly when they share the first ``i + 1`` blocks of text. The gateway never tokenizes:
character blocks approximate the engine's token blocks well enough to find the replica whose prefix cache holds the
longest part of the prompt. The index from block hash to replica is an LRU of bounded size.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from model_engine_server.config import RoutingPolicy

# A replica not offered in any upstream set this long is forgotten, metrics series included. Leaving its endpoint's
# set forgets it at once (see ``ReplicaRouter._observe``); this catches the sets that were replaced whole (an endpoint
# scaled to zero and back comes up on new pod addresses) and endpoints that were deleted.
IDLE_REPLICA_SECONDS = 600.0
REASONS = ("least_load", "prefix_affinity", "retry")  # the values of REPLICA_CHOSEN's ``reason`` label

REPLICA_IN_FLIGHT = Gauge(
    "llm_engine_replica_inflight_requests",
    "Requests this process has in flight to each inference server replica (base URL).",
    ["replica"],
)
REPLICA_CHOSEN = Counter(
    "llm_engine_replica_chosen",
    "Requests sent to each replica, by why it was chosen (least_load, prefix_affinity, retry).",
    ["replica", "reason"],
)
REPLICA_RETRIES = Counter(
    "llm_engine_replica_retries",
    "Requests that could not be sent to this replica (connection refused or reset) and were retried on another.",
    ["replica"],
)


def order_replicas(
    replicas: Sequence[str],
    in_flight: Mapping[str, int],
    failed: Set[str],
    preferred: str | None = None,
    max_imbalance: int = 0,
    turn: int = 0,
) -> list[str]:
    """The replicas to try, best first.

    Least in flight first; equal counts in a rotation starting at ``turn`` (so idle replicas take turns). Replicas in
    ``failed`` are left out — unless every replica is, since trying one beats a certain 503. ``preferred`` (the
    replica holding the prompt's prefix) goes first when it has at most ``max_imbalance`` more requests in flight
    than the least busy candidate.
    """
    usable = [r for r in replicas if r not in failed] or list(replicas)
    if not usable:
        return []
    offset = turn % len(usable)
    rotated = [*usable[offset:], *usable[:offset]]
    ordered = sorted(rotated, key=lambda r: in_flight.get(r, 0))  # stable: equal counts keep the rotation
    if preferred in ordered and in_flight.get(preferred, 0) - in_flight.get(ordered[0], 0) <= max_imbalance:
        ordered.remove(preferred)
        ordered.insert(0, preferred)
    return ordered


def prefix_hashes(text: str, block_chars: int) -> list[int]:
    """Chained hashes of the text's whole ``block_chars``-character blocks (a trailing partial block is not hashed:
    the next prompt sharing it is unlikely to share it whole)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        previous = hash((previous, text[start : start + block_chars]))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Block hash -> the replica that last served a prompt with that prefix; least recently used entries go first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._owner: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._owner)

    def lookup(self, hashes: Sequence[int], replicas: Set[str]) -> str | None:
        """The replica among ``replicas`` that served the longest prefix of these blocks, if any."""
        for block in reversed(hashes):
            owner = self._owner.get(block)
            if owner in replicas:
                return owner
        return None

    def record(self, hashes: Sequence[int], replica: str) -> None:
        for block in hashes:
            self._owner[block] = replica
            self._owner.move_to_end(block)
        while len(self._owner) > self.capacity:
            self._owner.popitem(last=False)


@dataclass(frozen=True)
class Route:
    """One request's plan: the replicas to try in order and why the first was chosen."""

    order: list[str]
    reason: str
    hashes: list[int]


class ReplicaRouter:
    """This process's view of the replicas: in-flight counts, recent connection failures and the prefix index."""

    def __init__(
        self,
        policy: RoutingPolicy = RoutingPolicy.LEAST_LOAD,
        *,
        max_imbalance: int = 4,
        block_chars: int = 256,
        index_blocks: int = 65536,
        failure_cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.max_imbalance = max_imbalance
        self.block_chars = block_chars
        self.index = PrefixIndex(index_blocks)
        self.failure_cooldown = failure_cooldown
        self._clock = clock
        self._in_flight: dict[str, int] = {}
        self._failed_at: dict[str, float] = {}
        self._turn = 0
        self._group: dict[str, frozenset[str]] = {}  # replica -> the latest upstream set it was offered in
        self._seen_at: dict[str, float] = {}  # replica -> when it was last offered
        self._departed: set[str] = set()  # left its set with requests still in flight: forgotten when they end
        self._swept_at = clock()

    def known(self) -> set[str]:
        """Replicas this router keeps state and metrics series for."""
        return set(self._seen_at)

    def in_flight(self, replica: str) -> int:
        return self._in_flight.get(replica, 0)

    def failed(self) -> set[str]:
        """Replicas whose last request could not connect, within the cool-down."""
        now = self._clock()
        for replica, at in list(self._failed_at.items()):
            if now - at >= self.failure_cooldown:
                del self._failed_at[replica]  # cooled down (or gone for good): try it again
        return set(self._failed_at)

    def route(self, replicas: Sequence[str], prompt: str | None) -> Route:
        self._turn += 1
        self._observe(replicas)
        hashes: list[int] = []
        preferred = None
        failed = self.failed()
        if self.policy is RoutingPolicy.PREFIX_AFFINITY and prompt:
            hashes = prefix_hashes(prompt, self.block_chars)
            preferred = self.index.lookup(hashes, set(replicas) - failed)
        order = order_replicas(replicas, self._in_flight, failed, preferred, self.max_imbalance, self._turn)
        chose_affinity = preferred is not None and order[:1] == [preferred]
        reason = RoutingPolicy.PREFIX_AFFINITY if chose_affinity else RoutingPolicy.LEAST_LOAD
        return Route(order, reason.value, hashes)

    @contextmanager
    def sending(self, replica: str, reason: str) -> Iterator[None]:
        """Count one request in flight to ``replica`` while the body runs."""
        self._in_flight[replica] = self.in_flight(replica) + 1
        REPLICA_IN_FLIGHT.labels(replica).inc()
        REPLICA_CHOSEN.labels(replica, reason).inc()
        try:
            yield
        finally:
            self._in_flight[replica] -= 1
            REPLICA_IN_FLIGHT.labels(replica).dec()
            if not self._in_flight[replica]:
                del self._in_flight[replica]  # pods come and go: keep no entry for idle ones
                if replica in self._departed:
                    self._forget(replica)

    def connected(self, replica: str, route: Route) -> None:
        """The request reached ``replica``: it is healthy, and its prefix cache now holds this prompt's prefix."""
        self._failed_at.pop(replica, None)
        if route.hashes:
            self.index.record(route.hashes, replica)

    def connection_failed(self, replica: str) -> None:
        self._failed_at[replica] = self._clock()
        REPLICA_RETRIES.labels(replica).inc()

    def _observe(self, replicas: Sequence[str]) -> None:
        """Forget the replicas that left their endpoint's upstream set, and those not offered for a long time.

        The router is not told which endpoint a set belongs to, but endpoints share no replica (each pod, local
        process or Service has its own address): a new set sharing a replica with an older one is the same
        endpoint's, and the older set's other members that are missing from it have left.
        """
        now = self._clock()
        current = frozenset(replicas)
        for replica in current:
            previous = self._group.get(replica)
            if previous is not None and previous != current:
                for gone in previous - current:
                    if self._group.get(gone) == previous:  # not offered in a newer set since
                        self._depart(gone)
            self._group[replica] = current
            self._seen_at[replica] = now
            self._departed.discard(replica)
        if now - self._swept_at >= IDLE_REPLICA_SECONDS / 10:
            self._swept_at = now
            for replica, seen in list(self._seen_at.items()):
                if now - seen >= IDLE_REPLICA_SECONDS:
                    self._depart(replica)

    def _depart(self, replica: str) -> None:
        if self.in_flight(replica):
            self._departed.add(replica)  # its series must still count those requests down
        else:
            self._forget(replica)

    def _forget(self, replica: str) -> None:
        self._group.pop(replica, None)
        self._seen_at.pop(replica, None)
        self._failed_at.pop(replica, None)
        self._departed.discard(replica)
        REPLICA_IN_FLIGHT.remove(replica)
        REPLICA_RETRIES.remove(replica)
        for reason in REASONS:
            REPLICA_CHOSEN.remove(replica, reason)
