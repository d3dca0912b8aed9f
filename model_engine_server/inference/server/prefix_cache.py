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

from model_engine_server.inference.server.kv_cache import BatchKvCache

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

    def lookup(self, tokens: Sequence[int]) -> torch.Tensor | None:
        """Key/values ``[2, layers, kv_heads, n, head_dim]`` of the longest cached prefix of ``tokens``, leaving at
        least the last token uncached (its logits are needed); ``None`` on a miss."""
        keys = self._chain(tokens)
        found: list[int] = []
        for key, block_tokens in keys:
            block = self._blocks.get(key)
            if block is None or block.tokens != block_tokens:
                break
            found.append(key)
        if not found:
            return None
        self._touch(found)
        return torch.cat([self._blocks[key].kv for key in found], dim=-2)

    def insert(self, tokens: Sequence[int], kv_of: Callable[[int, int], torch.Tensor]) -> int:
        """Store the blocks of ``tokens`` not cached yet; ``kv_of(start, end)`` gives the key/values of tokens
        ``start..end`` (``[2, layers, kv_heads, end - start, head_dim]``). Returns how many blocks were added."""
        if not self.enabled:
            return 0
        keys = self._chain(tokens)
        missing = [b for b, (key, _) in enumerate(keys) if key not in self._blocks]
        if not missing:
            self._touch([key for key, _ in keys])
            return 0
        start = missing[0] * self.block_size
        slab = kv_of(start, len(keys) * self.block_size)
        for b in missing:
            offset = b * self.block_size - start
            kv = slab[..., offset : offset + self.block_size, :].clone()  # owns its memory: evicting one frees it
            key, block_tokens = keys[b]
            self._blocks[key] = _Block(block_tokens, kv)
            self._bytes += kv.nbytes
        self._touch([key for key, _ in keys])
        self._evict()
        return len(missing)

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
    prefixes: list[torch.Tensor | None]

    @property
    def reused_tokens(self) -> list[int]:
        return [0 if p is None else p.shape[-2] for p in self.prefixes]


class _Request(Protocol):
    prompt_ids: list[int]
    prompt_logprobs: bool


def plan_prefill(cache: PrefixCache, requests: Sequence[_Request], metrics: ServerMetrics) -> list[PrefillGroup]:
    """Split a prefill into the prompts without a cached prefix and those with one, and count the lookups.

    Hits go in a group of their own so that a long uncached prompt does not force them to recompute their prefix.
    Prompt logprobs need the logits of every prompt token, so those requests compute their whole prompt.
    """
    lookup = [cache.enabled and not r.prompt_logprobs for r in requests]
    found = [cache.lookup(r.prompt_ids) if use else None for r, use in zip(requests, lookup, strict=True)]
    misses = [i for i, kv in enumerate(found) if kv is None]
    hits = [i for i, kv in enumerate(found) if kv is not None]
    groups = [PrefillGroup(misses, [None] * len(misses))] if misses else []
    if hits:
        lengths = [len(requests[i].prompt_ids) for i in hits]
        groups.append(PrefillGroup(hits, align_prefixes(lengths, [found[i] for i in hits])))
    metrics.observe_prefix_cache(sum(lookup), [n for group in groups for n in group.reused_tokens], cache.stats.bytes)
    return groups


def align_prefixes(lengths: Sequence[int], prefixes: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Trim cached prefixes so that every row keeping one has the same, longest uncached suffix.

    A left-padded batch is right-aligned: the suffixes computed together share their last column, and a row's
    prefix must end right where its suffix starts. So a row whose suffix is shorter than the longest reuses fewer
    cached tokens, and recomputes the rest.
    """
    width = max(length - (0 if p is None else p.shape[-2]) for length, p in zip(lengths, prefixes, strict=True))
    aligned: list[torch.Tensor | None] = []
    for length, prefix in zip(lengths, prefixes, strict=True):
        keep = length - width
        aligned.append(prefix[..., :keep, :] if prefix is not None and keep > 0 else None)
    return aligned
