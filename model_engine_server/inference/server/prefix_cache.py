"""Prefix caching: the key/values of recent prompt prefixes, kept in blocks, reused by later prompts that start alike.

A prompt is cut into blocks of ``block_size`` tokens. Block ``b`` is keyed by a hash chained over blocks ``0..b``, so
one dictionary probe per block finds the longest cached prefix, and two prompts share exactly the blocks they agree on
from the start (the key/values of a token depend on every token before it, and on its absolute position, which the
chain fixes). Each block owns a copy of its key/values, ``[2, layers, kv_heads, block_size, head_dim]``; a hit copies
them again into the new batch's cache, so nothing written later can change a stored block.

Blocks are evicted least recently used, under a byte budget. Every use touches a prefix's blocks deepest first, so a
block is always more recent than its descendants and eviction removes chain tails before the blocks they extend.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from model_engine_server.inference.server.kv_cache import BatchKvCache, KvPrefix

if TYPE_CHECKING:
    from model_engine_server.inference.server.metrics import ServerMetrics

DEFAULT_BLOCK_SIZE = 16


@dataclass(frozen=True)
class _Block:
    tokens: tuple[int, ...]  # checked on lookup, so a hash collision can never reuse another prompt's key/values
    kv: torch.Tensor  # [2, layers, kv_heads, block_size, head_dim]


@dataclass(frozen=True)
class CacheStats:
    blocks: int
    bytes: int
    evicted_blocks: int


class PrefixCache:
    """Block-granular LRU store of prompt-prefix key/values. ``capacity_bytes == 0`` disables it."""

    def __init__(self, capacity_bytes: int, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if capacity_bytes < 0 or block_size < 1:
            raise ValueError("the prefix cache needs capacity_bytes >= 0 and block_size >= 1")
        self.capacity_bytes = capacity_bytes
        self.block_size = block_size
        self._blocks: OrderedDict[int, _Block] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._evicted = 0

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    @property
    def stats(self) -> CacheStats:
        return CacheStats(len(self._blocks), self._bytes, self._evicted)

    def lookup(self, tokens: Sequence[int]) -> KvPrefix | None:
        """Key/values of the longest cached prefix of ``tokens``, leaving at least the last token uncached (its
        logits are needed); ``None`` on a miss. The blocks are handed out as they are stored, without a copy: the
        batch cache built from them copies them once (one pass over memory instead of two)."""
        found = self._cached_keys(tokens)
        if not found:
            return None
        self._touch(found)
        return KvPrefix(tuple(self._blocks[key].kv for key in found))

    def cached_length(self, tokens: Sequence[int]) -> int:
        """How many tokens ``lookup`` would return, without copying anything or counting as a use."""
        return len(self._cached_keys(tokens)) * self.block_size

    def _cached_keys(self, tokens: Sequence[int]) -> list[int]:
        found: list[int] = []
        for key, block_tokens in self._chain(tokens):
            block = self._blocks.get(key)
            if block is None or block.tokens != block_tokens:
                break
            found.append(key)
        return found

    def insert(self, tokens: Sequence[int], kv_of: Callable[[int, int], torch.Tensor]) -> int:
        """Store the blocks of ``tokens`` not cached yet; ``kv_of(start, end)`` gives a new tensor (the block owns it)
        with the key/values of tokens ``start..end``, ``[2, layers, kv_heads, end - start, head_dim]``. Returns how
        many blocks were added."""
        if not self.enabled:
            return 0
        keys = self._chain(tokens)
        added = 0
        for b, (key, block_tokens) in enumerate(keys):
            if key not in self._blocks:
                kv = kv_of(b * self.block_size, (b + 1) * self.block_size)
                self._blocks[key] = _Block(block_tokens, kv)
                self._bytes += kv.nbytes
                added += 1
        self._touch([key for key, _ in keys])
        self._evict()
        return added

    def insert_rows(self, kv: BatchKvCache, prompts: Sequence[Sequence[int]]) -> None:
        """Store the prefixes of a freshly prefilled batch, whose row ``i`` holds ``prompts[i]`` right-aligned."""
        for row, prompt in enumerate(prompts):
            first = kv.length - len(prompt)  # the column of the prompt's first token

            def window(start: int, end: int, row: int = row, first: int = first) -> torch.Tensor:
                return kv.window(row, first + start, first + end)

            self.insert(prompt, window)

    def _chain(self, tokens: Sequence[int]) -> list[tuple[int, tuple[int, ...]]]:
        """(chained hash, tokens) of every full block before the last token."""
        count = (len(tokens) - 1) // self.block_size if self.enabled else 0
        chain: list[tuple[int, tuple[int, ...]]] = []
        parent = 0
        for b in range(count):
            block_tokens = tuple(tokens[b * self.block_size : (b + 1) * self.block_size])
            parent = hash((parent, block_tokens))
            chain.append((parent, block_tokens))
        return chain

    def _touch(self, keys: list[int]) -> None:
        for key in reversed(keys):  # deepest first: a prefix ends up more recent than its extensions
            self._blocks.move_to_end(key)

    def _evict(self) -> None:
        while self._bytes > self.capacity_bytes and self._blocks:
            _, block = self._blocks.popitem(last=False)
            self._bytes -= block.kv.nbytes
            self._evicted += 1


@dataclass(frozen=True)
class PrefillGroup:
    """Prompts prefilled together: ``indices`` into the planned list, and the cached prefix of each (or ``None``)."""

    indices: list[int]
    prefixes: list[KvPrefix | None]

    @property
    def reused_tokens(self) -> list[int]:
        return [0 if p is None else p.length for p in self.prefixes]


class _Request(Protocol):
    prompt_ids: list[int]
    prompt_logprobs: bool


def uncached_tokens(cache: PrefixCache, request: _Request) -> int:
    """The prompt tokens a request's prefill will compute (about: a group may recompute a little more)."""
    cached = 0 if request.prompt_logprobs or not cache.enabled else cache.cached_length(request.prompt_ids)
    return len(request.prompt_ids) - cached


def plan_prefill(cache: PrefixCache, requests: Sequence[_Request], metrics: ServerMetrics) -> list[PrefillGroup]:
    """Split a prefill into groups run one after the other, and count the lookups.

    Prompts without a cached prefix form one group. Those with one are grouped by the length of their uncached
    suffix: a group computes its longest suffix on every row (see ``align_prefixes``), so a short suffix next to a
    long one (or next to a whole cold prompt) would recompute most of its prefix. Prompt logprobs need the logits of
    every prompt token, so those requests compute their whole prompt.
    """
    lookup = [cache.enabled and not r.prompt_logprobs for r in requests]
    found = [cache.lookup(r.prompt_ids) if use else None for r, use in zip(requests, lookup, strict=True)]
    misses = [i for i, kv in enumerate(found) if kv is None]
    groups = [PrefillGroup(misses, [None] * len(misses))] if misses else []
    suffixes = {i: len(requests[i].prompt_ids) - kv.length for i, kv in enumerate(found) if kv is not None}
    for indices in group_by_suffix(suffixes, slack=cache.block_size):
        lengths = [len(requests[i].prompt_ids) for i in indices]
        groups.append(PrefillGroup(indices, align_prefixes(lengths, [found[i] for i in indices])))
    metrics.observe_prefix_cache(sum(lookup), [n for group in groups for n in group.reused_tokens], cache.stats.bytes)
    return groups


def group_by_suffix(suffixes: dict[int, int], slack: int) -> list[list[int]]:
    """Indices grouped so that no suffix in a group is longer than twice the group's shortest plus ``slack``."""
    groups: list[list[int]] = []
    for i in sorted(suffixes, key=suffixes.__getitem__):
        if not groups or suffixes[i] > 2 * suffixes[groups[-1][0]] + slack:
            groups.append([])
        groups[-1].append(i)
    return groups


def align_prefixes(lengths: Sequence[int], prefixes: Sequence[KvPrefix | None]) -> list[KvPrefix | None]:
    """Trim cached prefixes so that every row keeping one has the same, longest uncached suffix.

    A left-padded batch is right-aligned: the suffixes computed together share their last column, and a row's
    prefix must end right where its suffix starts. So a row whose suffix is shorter than the longest reuses fewer
    cached tokens, and recomputes the rest.
    """
    width = max(length - (0 if p is None else p.length) for length, p in zip(lengths, prefixes, strict=True))
    return [None if p is None else p.truncated(n - width) for n, p in zip(lengths, prefixes, strict=True)]
