"""Prefix caching: a prompt that starts like an earlier one reuses its key/values and still gets the same answer.

The structure is tested on small tensors (no model); the served behaviour through the session's real server, whose
prefix cache is on by default.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import torch

from model_engine_server.inference.server.kv_cache import BatchKvCache, KvPrefix
from model_engine_server.inference.server.prefix_cache import (
    DEFAULT_BLOCK_SIZE,
    PrefixCache,
    align_prefixes,
    group_by_suffix,
    uncached_tokens,
)
from tests.inference_server.conftest import RunningServer
from tests.inference_server.test_batching import metric

BLOCK = 4
LAYERS, HEADS, DIM = 2, 1, 3
BLOCK_BYTES = 2 * LAYERS * HEADS * BLOCK * DIM * 4  # float32 keys and values of one block


@dataclass
class Prompt:
    prompt_ids: list[int]
    prompt_logprobs: bool


def kv_for(tokens: list[int]) -> torch.Tensor:
    """Fake key/values whose every entry is its token's id, so a test can tell which tokens a tensor came from."""
    ids = torch.tensor(tokens, dtype=torch.float32)
    return ids[None, None, None, :, None].expand(2, LAYERS, HEADS, len(tokens), DIM).clone()


def fill(cache: PrefixCache, tokens: list[int]) -> torch.Tensor:
    source = kv_for(tokens)
    cache.insert(tokens, lambda start, end: source[..., start:end, :].clone())
    return source


def cached_tokens(prefix: KvPrefix | None) -> list[int]:
    """The tokens a prefix holds, read through the batch cache built from it (as a prefill would)."""
    if prefix is None:
        return []
    layer = BatchKvCache.from_prefixes([prefix], room=0).buffered_layers[0]
    assert layer.key_buffer is not None and layer.value_buffer is not None
    assert torch.equal(layer.key_buffer[0, 0, : layer.length], layer.value_buffer[0, 0, : layer.length])
    return [int(v) for v in layer.key_buffer[0, 0, : layer.length, 0]]


def test_lookup_returns_the_longest_cached_prefix_in_whole_blocks() -> None:
    cache = PrefixCache(capacity_bytes=100 * BLOCK_BYTES, block_size=BLOCK)
    fill(cache, list(range(1, 12)))  # 11 tokens: blocks 1-4 and 5-8; 9-11 make no full block

    assert cached_tokens(cache.lookup([1, 2, 3, 4, 5, 6, 7, 8, 99, 100])) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert cached_tokens(cache.lookup([1, 2, 3, 4, 5, 6, 0, 8, 9])) == [1, 2, 3, 4]  # diverges in block two
    assert cache.lookup([9, 2, 3, 4, 5]) is None  # a block is only found after the same blocks before it
    assert cache.lookup([5, 6, 7, 8, 9]) is None


def test_admission_counts_only_the_tokens_a_prefill_will_compute() -> None:
    cache = PrefixCache(capacity_bytes=100 * BLOCK_BYTES, block_size=BLOCK)
    fill(cache, list(range(1, 12)))
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 99, 100]

    assert uncached_tokens(cache, Prompt(prompt, prompt_logprobs=False)) == 2  # 8 of the 10 tokens are cached
    assert uncached_tokens(cache, Prompt(prompt, prompt_logprobs=True)) == 10  # computes its whole prompt


def test_the_last_prompt_token_is_never_served_from_the_cache() -> None:
    cache = PrefixCache(capacity_bytes=100 * BLOCK_BYTES, block_size=BLOCK)
    fill(cache, [1, 2, 3, 4, 5, 6, 7, 8, 9])

    # The same 8 tokens again: the last one must be computed for its logits, so only the first block is reused.
    assert cached_tokens(cache.lookup([1, 2, 3, 4, 5, 6, 7, 8])) == [1, 2, 3, 4]


def test_stored_blocks_are_copies_that_later_writes_cannot_change() -> None:
    cache = PrefixCache(capacity_bytes=100 * BLOCK_BYTES, block_size=BLOCK)
    source = fill(cache, [1, 2, 3, 4, 5])
    source.zero_()  # the batch cache the prefix came from is reused and overwritten in place
    found = cache.lookup([1, 2, 3, 4, 5])
    assert found is not None
    batch = BatchKvCache.from_prefixes([found], room=4)
    for layer in batch.buffered_layers:  # and the batch that reused it writes its own cache in place
        assert layer.key_buffer is not None and layer.value_buffer is not None
        layer.key_buffer.zero_()
        layer.value_buffer.zero_()

    assert cached_tokens(cache.lookup([1, 2, 3, 4, 5])) == [1, 2, 3, 4]


def test_eviction_keeps_memory_under_the_bound_and_drops_the_least_recently_used() -> None:
    cache = PrefixCache(capacity_bytes=4 * BLOCK_BYTES, block_size=BLOCK)
    fill(cache, [1, 1, 1, 1, 2, 2, 2, 2, 0])  # prefix A: two blocks
    fill(cache, [3, 3, 3, 3, 4, 4, 4, 4, 0])  # prefix B: two blocks; the cache is full
    assert cache.stats.bytes == 4 * BLOCK_BYTES
    cache.lookup([1, 1, 1, 1, 2, 2, 2, 2, 0])  # A is used again: B is now the least recently used

    fill(cache, [5, 5, 5, 5, 0])  # one more block must push one out

    assert cache.stats.bytes <= 4 * BLOCK_BYTES and cache.stats.evicted_blocks == 1
    assert cached_tokens(cache.lookup([1, 1, 1, 1, 2, 2, 2, 2, 0])) == [1, 1, 1, 1, 2, 2, 2, 2]
    assert cached_tokens(cache.lookup([5, 5, 5, 5, 0])) == [5, 5, 5, 5]
    # B lost its tail block first, never its first block: what is left of it is still a usable prefix.
    assert cached_tokens(cache.lookup([3, 3, 3, 3, 4, 4, 4, 4, 0])) == [3, 3, 3, 3]


def test_a_prefix_larger_than_the_whole_cache_is_not_kept() -> None:
    cache = PrefixCache(capacity_bytes=BLOCK_BYTES, block_size=BLOCK)
    fill(cache, [1, 1, 1, 1, 2, 2, 2, 2, 0])

    assert cache.stats.bytes <= BLOCK_BYTES
    assert cached_tokens(cache.lookup([1, 1, 1, 1, 2, 2, 2, 2, 0])) == [1, 1, 1, 1]


def test_a_disabled_cache_stores_nothing() -> None:
    cache = PrefixCache(capacity_bytes=0, block_size=BLOCK)
    fill(cache, [1, 2, 3, 4, 5])
    assert cache.lookup([1, 2, 3, 4, 5]) is None and cache.stats.bytes == 0


def test_aligned_prefixes_leave_every_cached_row_the_same_suffix_length() -> None:
    # Prompts of 20, 14 and 9 tokens with 16, 12 and 0 cached: the longest suffix is 9 (the uncached row).
    prefixes = [
        KvPrefix((kv_for(list(range(8))), kv_for(list(range(8, 16))))),
        KvPrefix((kv_for(list(range(12))),)),
        None,
    ]
    aligned = align_prefixes([20, 14, 9], prefixes)
    assert [cached_tokens(p) for p in aligned] == [list(range(11)), list(range(5)), []]


def test_hits_with_very_different_suffixes_are_prefilled_in_separate_groups() -> None:
    # A 3-token suffix next to a 200-token one would recompute 197 cached tokens; 3, 5 and 20 stay together.
    groups = group_by_suffix({0: 200, 1: 3, 2: 20, 3: 5, 4: 150}, slack=16)
    assert groups == [[1, 3, 2], [4, 0]]


# --- the served behaviour ----------------------------------------------------------------------------------------

# Long enough for several blocks, and unique to this module so the first request with it is a cache miss.
SYSTEM = (
    "You are the reference librarian of the Prefix Cache Test Library. You answer questions about the library's "
    "opening hours, its collections of maps, atlases and travel journals, and its reading rooms. Visitors may "
    "borrow up to five books for three weeks; rare books stay in the building. Answer briefly and politely. "
)
QUESTIONS = ["When does the library open?", "Do you keep old maps of Europe?", "Where can I read quietly?"]


def generate(client: httpx.Client, prompt: str, uncached: bool = False) -> list[int]:
    return [token["id"] for token in details(client, prompt, uncached)["tokens"]]


def details(client: httpx.Client, prompt: str, uncached: bool = False) -> Any:
    # decoder_input_details needs every prompt token's logits, so such a request never uses the prefix cache.
    parameters = {"max_new_tokens": 8, "details": True, "decoder_input_details": uncached}
    response = client.post("/generate", json={"inputs": prompt, "parameters": parameters})
    assert response.status_code == 200, response.text
    return response.json()["details"]


def prefix_counters(client: httpx.Client) -> dict[str, float]:
    names = ("lookups", "hits", "reused_tokens")
    return {name: metric(client, f"llm_engine_prefix_cache_{name}_total") for name in names}


@pytest.mark.model
def test_a_cache_hit_gives_the_same_greedy_tokens_and_is_counted(client: httpx.Client) -> None:
    prompt = SYSTEM + QUESTIONS[0]
    before = prefix_counters(client)
    uncached_details = details(client, prompt, uncached=True)  # computes the whole prompt, and caches its prefix
    uncached = [token["id"] for token in uncached_details["tokens"]]
    prompt_tokens = len(uncached_details["prefill"])
    after_uncached = prefix_counters(client)
    hit = generate(client, prompt)
    after_hit = prefix_counters(client)

    assert hit == uncached
    assert after_uncached == before  # a prompt-logprobs request does not look the cache up
    assert after_hit["lookups"] == before["lookups"] + 1
    assert after_hit["hits"] == before["hits"] + 1
    # Every whole block before the last prompt token (which is always computed, for its logits).
    blocks = (prompt_tokens - 1) // DEFAULT_BLOCK_SIZE
    assert blocks >= 4
    assert after_hit["reused_tokens"] - before["reused_tokens"] == blocks * DEFAULT_BLOCK_SIZE


@pytest.mark.model
async def test_concurrent_hits_with_different_suffixes_match_their_uncached_answers(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        generate(client, SYSTEM + "Hello.")  # caches the shared system prompt
        expected = [generate(client, SYSTEM + q, uncached=True) for q in QUESTIONS]
        before = prefix_counters(client)

    async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:

        async def run(prompt: str) -> Any:
            body = {"inputs": prompt, "parameters": {"max_new_tokens": 8, "details": True}}
            response = await client.post("/generate", json=body)
            return [token["id"] for token in response.json()["details"]["tokens"]]

        # Arriving together, they are usually prefilled as one group: suffixes of different lengths around one prefix.
        together = await asyncio.gather(*(run(SYSTEM + q) for q in QUESTIONS))

    with httpx.Client(base_url=server.url, timeout=120) as client:
        after = prefix_counters(client)
    assert list(together) == expected
    assert after["hits"] - before["hits"] == len(QUESTIONS)
