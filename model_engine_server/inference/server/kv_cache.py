"""A key/value cache laid out for continuous batching.

Each layer keeps one pre-allocated buffer of shape ``[batch, kv_heads, capacity, head_dim]``. Sequences are
right-aligned: every row's newest token sits in column ``length - 1`` and shorter rows are left-padded (the attention
mask hides the padding, which is kept at zero so it can never inject NaNs). Writing a decode step is then an in-place
copy into column ``length`` instead of the ``torch.cat`` of the whole cache that ``DynamicLayer`` does every step —
at batch 32 that copy would dominate the step time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Columns reserved beyond what is needed now, so most decode steps write without re-allocating.
_HEADROOM = 64


class BufferedLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A ``DynamicLayer`` whose ``keys``/``values`` are views into a larger buffer that grows geometrically."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None
        self.length = 0

    @classmethod
    def from_buffers(cls, keys: torch.Tensor, values: torch.Tensor, length: int) -> BufferedLayer:
        layer = cls()
        layer.key_buffer, layer.value_buffer, layer.length = keys, values, length
        layer.dtype, layer.device = keys.dtype, keys.device
        layer.is_initialized = True
        layer._refresh_views()
        return layer

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *_args: Any, **_kwargs: Any) -> Any:
        new = key_states.shape[-2]
        key_buffer, value_buffer = self.reserve(key_states, new)
        key_buffer[:, :, self.length : self.length + new] = key_states
        value_buffer[:, :, self.length : self.length + new] = value_states
        self.advance(new)
        return self.keys, self.values

    def reserve(self, like: torch.Tensor, new: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The key and value buffers, with room for ``new`` more columns (a first call allocates them shaped as
        ``like``: ``[batch, kv_heads, any, head_dim]``). Columns ``length .. length + new`` are the next to write."""
        if self.key_buffer is None or self.value_buffer is None:
            batch, heads, _, dim = like.shape
            shape = (batch, heads, new + _HEADROOM, dim)
            self.key_buffer = like.new_zeros(shape)
            self.value_buffer = like.new_zeros(shape)
            self.dtype, self.device = like.dtype, like.device
            self.is_initialized = True
        elif self.length + new > self.key_buffer.shape[-2]:
            self._grow(self.length + new)
        assert self.key_buffer is not None and self.value_buffer is not None
        return self.key_buffer, self.value_buffer

    def advance(self, new: int) -> None:
        """Count ``new`` more columns as written."""
        self.length += new
        self._refresh_views()

    def _grow(self, needed: int) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        capacity = max(needed + _HEADROOM, self.key_buffer.shape[-2] * 3 // 2)
        self.key_buffer = _resized(self.key_buffer, capacity, self.length)
        self.value_buffer = _resized(self.value_buffer, capacity, self.length)

    def _refresh_views(self) -> None:
        assert self.key_buffer is not None and self.value_buffer is not None
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def get_seq_length(self) -> int:
        return self.length


def _resized(buffer: torch.Tensor, capacity: int, length: int) -> torch.Tensor:
    batch, heads, _, dim = buffer.shape
    out = buffer.new_zeros((batch, heads, capacity, dim))
    out[:, :, :length] = buffer[:, :, :length]
    return out


@dataclass(frozen=True)
class KvPrefix:
    """The key/values of a prompt's first tokens, as consecutive chunks ``[2, layers, kv_heads, n, head_dim]`` along
    the token axis (the prefix cache's own blocks, not copies: read them, never write them)."""

    chunks: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        return sum(chunk.shape[-2] for chunk in self.chunks)

    def truncated(self, length: int) -> KvPrefix | None:
        """The first ``length`` tokens (views, no copy); ``None`` when nothing is left."""
        kept: list[torch.Tensor] = []
        for chunk in self.chunks:
            if length <= 0:
                break
            kept.append(chunk[..., :length, :])
            length -= chunk.shape[-2]
        return KvPrefix(tuple(kept)) if kept else None


class BatchKvCache(Cache):
    """The per-layer buffers of one running batch, in the ``Cache`` shape the model expects."""

    def __init__(self, layers: list[BufferedLayer]) -> None:
        super().__init__(layers=list[Any](layers))
        self.buffered_layers = layers

    @classmethod
    def empty(cls, num_layers: int) -> BatchKvCache:
        return cls([BufferedLayer() for _ in range(num_layers)])

    @property
    def length(self) -> int:
        return self.buffered_layers[0].length if self.buffered_layers else 0

    @classmethod
    def from_prefixes(cls, prefixes: Sequence[KvPrefix | None], room: int) -> BatchKvCache:
        """A cache holding each row's cached prefix (``None`` for none), right-aligned, with ``room`` more columns
        reserved for the tokens about to be computed. The prefixes are copied: writing the cache never changes them."""
        first = next(p for p in prefixes if p is not None).chunks[0]
        _, num_layers, heads, _, dim = first.shape
        length = max(p.length for p in prefixes if p is not None)
        kv = first.new_zeros((2, num_layers, len(prefixes), heads, length + room + _HEADROOM, dim))
        for row, prefix in enumerate(prefixes):
            column = length - prefix.length if prefix is not None else length
            for chunk in prefix.chunks if prefix is not None else ():
                kv[:, :, row, :, column : column + chunk.shape[-2]] = chunk
                column += chunk.shape[-2]
        return cls([BufferedLayer.from_buffers(kv[0, i], kv[1, i], length) for i in range(num_layers)])

    def advance(self, new: int) -> None:
        """Count ``new`` more columns as written in every layer (after writing them into ``reserve``d buffers)."""
        for layer in self.buffered_layers:
            layer.advance(new)

    def rewind(self, columns: int) -> None:
        """Forget the last ``columns`` columns of every layer (a speculative guess the model rejected). Their stale
        values stay in the buffers, beyond ``length``, where nothing reads them and the next write replaces them."""
        for layer in self.buffered_layers:
            layer.advance(-columns)

    def window(self, row: int, start: int, end: int) -> torch.Tensor:
        """A copy of columns ``start..end`` of ``row``, all layers: ``[2, layers, kv_heads, end - start, head_dim]``."""
        first = self.buffered_layers[0].key_buffer
        assert first is not None
        _, heads, _, dim = first.shape
        out = first.new_empty((2, len(self.buffered_layers), heads, end - start, dim))
        for i, layer in enumerate(self.buffered_layers):
            assert layer.key_buffer is not None and layer.value_buffer is not None
            out[0, i] = layer.key_buffer[row, :, start:end]
            out[1, i] = layer.value_buffer[row, :, start:end]
        return out

    def zero_columns(self, row: int, columns: int) -> None:
        """Clear the first ``columns`` columns of ``row`` (its left padding)."""
        for layer in self.buffered_layers:
            assert layer.key_buffer is not None and layer.value_buffer is not None
            layer.key_buffer[row, :, :columns] = 0
            layer.value_buffer[row, :, :columns] = 0

    def select(self, rows: torch.Tensor, keep_columns: int) -> BatchKvCache:
        """A new cache with only ``rows``, trimmed to the last ``keep_columns`` columns (dropping shared padding)."""
        start = self.length - keep_columns
        layers = []
        for layer in self.buffered_layers:
            assert layer.key_buffer is not None and layer.value_buffer is not None
            keys = _copy_window(layer.key_buffer, rows, start, self.length)
            values = _copy_window(layer.value_buffer, rows, start, self.length)
            layers.append(BufferedLayer.from_buffers(keys, values, keep_columns))
        return BatchKvCache(layers)

    @classmethod
    def concatenate(cls, caches: Sequence[BatchKvCache], rows: Sequence[int]) -> BatchKvCache:
        """Stack caches along the batch, right-aligning each one (zero padding on the left)."""
        length = max(cache.length for cache in caches)
        total_rows = sum(rows)
        layers = []
        for index in range(len(caches[0].buffered_layers)):
            parts = [cache.buffered_layers[index] for cache in caches]
            keys = _stack_right_aligned([p.key_buffer for p in parts], [p.length for p in parts], length, total_rows)
            values = _stack_right_aligned(
                [p.value_buffer for p in parts], [p.length for p in parts], length, total_rows
            )
            layers.append(BufferedLayer.from_buffers(keys, values, length))
        return cls(layers)


def _copy_window(buffer: torch.Tensor, rows: torch.Tensor, start: int, end: int) -> torch.Tensor:
    batch = rows.shape[0]
    _, heads, _, dim = buffer.shape
    out = buffer.new_zeros((batch, heads, end - start + _HEADROOM, dim))
    out[:, :, : end - start] = buffer.index_select(0, rows)[:, :, start:end]
    return out


def _stack_right_aligned(
    buffers: Sequence[torch.Tensor | None], lengths: Sequence[int], length: int, total_rows: int
) -> torch.Tensor:
    first = next(b for b in buffers if b is not None)
    _, heads, _, dim = first.shape
    out = first.new_zeros((total_rows, heads, length + _HEADROOM, dim))
    row = 0
    for buffer, part_length in zip(buffers, lengths, strict=True):
        assert buffer is not None
        rows = buffer.shape[0]
        out[row : row + rows, :, length - part_length : length] = buffer[:, :, :part_length]
        row += rows
    return out
