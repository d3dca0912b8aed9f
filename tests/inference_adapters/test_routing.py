"""Replica choice: the policy as a table, the prefix index, and the router's memory of failures and prefixes."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, generate_latest

from model_engine_server.api.openai_schemas import ChatCompletionBody, CompletionBody
from model_engine_server.config import RoutingPolicy
from model_engine_server.inference.routing import (
    IDLE_REPLICA_SECONDS,
    PrefixIndex,
    ReplicaRouter,
    order_replicas,
    prefix_hashes,
)

A, B, C = "http://a:80", "http://b:80", "http://c:80"


@pytest.mark.parametrize(
    ("in_flight", "failed", "preferred", "max_imbalance", "turn", "expected"),
    [
        # least in flight first
        ({A: 3, B: 1, C: 2}, set(), None, 0, 0, [B, C, A]),
        # ties rotate with the turn, so idle replicas take turns
        ({}, set(), None, 0, 0, [A, B, C]),
        ({}, set(), None, 0, 1, [B, C, A]),
        ({}, set(), None, 0, 5, [C, A, B]),
        # a replica whose last connection failed is never chosen while others are usable
        ({A: 5}, {B, C}, None, 0, 0, [A]),
        # ...but when all failed, trying one beats a certain 503
        ({}, {A, B, C}, None, 0, 0, [A, B, C]),
        # the prefix's replica goes first within the allowed imbalance
        ({A: 2, B: 0}, set(), A, 2, 0, [A, B, C]),
        # and loses it beyond the imbalance
        ({A: 3, B: 0, C: 0}, set(), A, 2, 0, [B, C, A]),
        # a failed preferred replica is not preferred
        ({}, {A}, A, 10, 0, [B, C]),
        # a preferred replica that is no longer a candidate (pod gone) is ignored
        ({}, set(), "http://gone:80", 10, 0, [A, B, C]),
    ],
)
def test_order_replicas(
    in_flight: dict[str, int],
    failed: set[str],
    preferred: str | None,
    max_imbalance: int,
    turn: int,
    expected: list[str],
) -> None:
    assert order_replicas([A, B, C], in_flight, failed, preferred, max_imbalance, turn) == expected


def test_no_replica_no_order() -> None:
    assert order_replicas([], {}, set()) == []


def test_prefix_hashes_chain_whole_blocks() -> None:
    system = "You are a helpful assistant. " * 10  # 290 characters
    question, other = "What is two plus two? Answer in words.", "Name a colour that rhymes with bread."
    one, two = prefix_hashes(system + question, 32), prefix_hashes(system + other, 32)
    assert len(one) == len(system + question) // 32 == 10
    shared = len(system) // 32
    assert one[:shared] == two[:shared] and one[shared:] != two[shared:]
    # the same block at another position hashes differently: a hash stands for the whole prefix up to it
    assert prefix_hashes("x" * 64, 32)[0] != prefix_hashes("x" * 64, 32)[1]
    assert prefix_hashes("short", 32) == []


def test_prefix_index_finds_the_longest_served_prefix_among_live_replicas() -> None:
    index = PrefixIndex(capacity=100)
    base = prefix_hashes("s" * 64, 32)
    longer = prefix_hashes("s" * 64 + "t" * 32, 32)
    index.record(longer, B)
    index.record(base, A)  # A served the shorter prefix since: the shared blocks are A's now
    assert index.lookup(longer, {A, B}) == B
    assert index.lookup(longer, {A}) == A  # B is gone: A still holds the shorter prefix
    assert index.lookup(prefix_hashes("u" * 64, 32), {A, B}) is None


def test_prefix_index_forgets_least_recently_used_blocks_first() -> None:
    index = PrefixIndex(capacity=4)
    first, second, third = (prefix_hashes(ch * 64, 32) for ch in "xyz")
    index.record(first, A)
    index.record(second, B)
    index.record(first, A)  # used again: now the most recent
    index.record(third, C)
    assert len(index) == 4
    assert index.lookup(first, {A, B, C}) == A
    assert index.lookup(second, {A, B, C}) is None


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_router_sends_a_shared_prefix_back_to_its_replica() -> None:
    router = ReplicaRouter(RoutingPolicy.PREFIX_AFFINITY, max_imbalance=1, block_chars=32)
    system = "Answer in French. " * 8
    first = router.route([A, B], system + "Hello")
    assert first.reason == "least_load"
    router.connected(first.order[0], first)
    with router.sending(first.order[0], first.reason):  # one request still in flight there
        again = router.route([A, B], system + "Goodbye")
        assert again.order[0] == first.order[0] and again.reason == "prefix_affinity"
        with router.sending(first.order[0], again.reason):  # two in flight, none elsewhere: beyond the imbalance
            crowded = router.route([A, B], system + "Thanks")
    assert crowded.order[0] != first.order[0] and crowded.reason == "least_load"


def test_least_load_policy_ignores_prefixes() -> None:
    router = ReplicaRouter(RoutingPolicy.LEAST_LOAD, block_chars=32)
    prompt = "p" * 100
    first = router.route([A, B], prompt)
    router.connected(first.order[0], first)
    assert first.hashes == [] and len(router.index) == 0
    assert router.route([A, B], prompt).order[0] != first.order[0]  # idle replicas take turns


def test_a_refused_replica_sits_out_the_cooldown_then_returns() -> None:
    clock = Clock()
    router = ReplicaRouter(failure_cooldown=30, clock=clock)
    router.connection_failed(A)
    assert all(router.route([A, B], None).order == [B] for _ in range(3))
    clock.now += 29  # the configured cool-down, not a built-in one
    assert router.route([A, B], None).order == [B]
    clock.now += 1
    assert {router.route([A, B], None).order[0] for _ in range(2)} == {A, B}


def series(replica: str) -> list[str]:
    """The /metrics lines (this process's registry) that name ``replica``."""
    return [line for line in generate_latest(REGISTRY).decode().splitlines() if f'replica="{replica}"' in line]


def test_a_replica_that_left_its_endpoint_loses_its_series() -> None:
    router = ReplicaRouter()
    other = ["http://other:80"]  # another endpoint's replica: untouched by this endpoint's churn
    for replicas in ([A, B], other):
        route = router.route(replicas, None)
        with router.sending(route.order[0], route.reason):
            pass
    router.connection_failed(B)
    assert series(A) and series(B) and series(other[0])

    router.route([A, C], None)  # B scaled away, C came up
    assert series(B) == [] and router.known() == {A, C, other[0]}
    assert series(A) and series(other[0])


def test_a_departed_replica_keeps_its_series_until_its_requests_end() -> None:
    router = ReplicaRouter()
    with router.sending(B, "least_load"):
        router.route([A, B], None)
        router.route([A], None)  # B is draining: its in-flight request still counts
        assert 'llm_engine_replica_inflight_requests{replica="http://b:80"} 1.0' in series(B)
    assert series(B) == []


def test_a_replica_offered_nowhere_for_long_is_forgotten() -> None:
    clock = Clock()
    router = ReplicaRouter(clock=clock)
    router.route([C], None)  # an endpoint later scaled to zero and back on new addresses: C is never seen again
    clock.now += IDLE_REPLICA_SECONDS
    router.route([A], None)
    assert router.known() == {A}


def test_a_success_clears_the_failure_at_once() -> None:
    router = ReplicaRouter()
    router.connection_failed(A)
    route = router.route([A], None)  # A alone: tried anyway
    router.connected(A, route)
    assert router.failed() == set()


def test_chat_conversations_sharing_their_first_messages_share_hashed_blocks() -> None:
    system = {"role": "system", "content": "You are a careful assistant for a public library. " * 8}

    def chat(*messages: dict[str, object]) -> str:
        prompt = ChatCompletionBody.model_validate({"model": "m", "messages": [system, *messages]}).routing_prompt()
        assert prompt is not None
        return prompt

    first = prefix_hashes(chat({"role": "user", "content": "Opening hours?"}), 64)
    second = prefix_hashes(chat({"role": "user", "content": [{"type": "text", "text": "Late fees?"}]}), 64)
    assert first[:5] == second[:5]
    parts = chat({"role": "user", "content": [{"type": "text", "text": "Late "}, {"type": "text", "text": "fees?"}]})
    assert parts == chat({"role": "user", "content": "Late fees?"})  # text parts route like the same string
    listed = CompletionBody.model_validate({"model": "m", "prompt": ["first prompt", "second"]})
    assert listed.routing_prompt() == "first prompt"
