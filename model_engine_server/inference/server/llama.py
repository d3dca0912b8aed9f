"""A lean forward pass for Llama-architecture models (SmolLM2, Llama 2/3, TinyLlama), built from transformers' weights.

transformers' generic module stack costs about as much Python and per-op overhead per decode step as a small model's
matrix products: dozens of modules, keyword plumbing and mask building in every one of 30 layers. This forward does
the same arithmetic with fewer, larger operations:

- q/k/v and gate/up projections are each one matrix product (their weights concatenated once at load);
- rotary cos/sin are computed once per step for all layers, and applied to queries and keys in one go;
- the attention mask is built once per step, and not at all for a decode step without left padding;
- grouped-query attention at decode needs no copy of the cache: the query heads sharing a key/value head are laid out
  as that head's query rows (they all sit at the same position), so one SDPA call serves them without repeating K/V;
- a left-padded prefill computes its projections and MLP on the real tokens only (see ``_layers``);
- the layer stack is compiled by TorchScript: one call from Python per forward, run without the interpreter lock
  (see ``_script``).

Keys and values go into the same ``BatchKvCache`` buffers as with the transformers forward, so the cache layout, and
everything the scheduler does with it, is unchanged.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any, List, Optional, Tuple, Union  # noqa: UP035 (TorchScript reads typing's generics)

import torch
import torch.nn.functional as F

from model_engine_server.inference.server.kv_cache import BatchKvCache

logger = logging.getLogger(__name__)

_ONEDNN = bool(torch.backends.mkldnn.is_available()) and hasattr(  # type: ignore[no-untyped-call]
    torch.ops.mkldnn, "_reorder_linear_weight"
)
_BATCH_HINT = 16  # oneDNN picks the weights' blocking for this many rows; any batch size still works


def _prepared(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A projection's weight laid out once for the fastest CPU kernel available (see ``_linear``), and whether that
    is oneDNN's."""
    onednn = _ONEDNN and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
    return (torch.ops.mkldnn._reorder_linear_weight(weight, _BATCH_HINT) if onednn else weight), onednn


def supports(model: Any) -> bool:
    """Whether ``model`` is a plain Llama-architecture causal LM this forward computes exactly."""
    config = model.config
    return (
        getattr(config, "model_type", None) == "llama"
        and type(model).__name__ == "LlamaForCausalLM"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "hidden_act", None) == "silu"
        and getattr(config, "pretraining_tp", 1) == 1
    )


class LlamaForward:
    """Computes next-token logits from a loaded ``LlamaForCausalLM``'s weights (projections re-laid out at load)."""

    def __init__(self, model: Any) -> None:
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.rotary = inner.rotary_emb  # handles every rope scaling type the checkpoint may declare
        self.norm = inner.norm.weight
        self.lm_head, self.onednn = _prepared(model.lm_head.weight)
        # Every layer's six tensors in one flat list, in the order ``_layers`` reads them. Weights share one dtype and
        # device, so oneDNN serves all projections or none.
        self.weights: list[torch.Tensor] = []
        for block in inner.layers:
            attention, mlp = block.self_attn, block.mlp
            qkv = torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            self.weights += [
                block.input_layernorm.weight,
                _prepared(qkv)[0],
                _prepared(attention.o_proj.weight)[0],
                block.post_attention_layernorm.weight,
                _prepared(gate_up)[0],
                _prepared(mlp.down_proj.weight)[0],
            ]
        self.layers = _script(_layers)

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: BatchKvCache,
        logits_to_keep: int = 1,
    ) -> torch.Tensor:
        """Logits ``[batch, kept, vocab]`` for new tokens ``input_ids`` ``[batch, new]`` appended to ``cache``.

        ``attention_mask`` ``[batch, cached + new]`` marks left padding with 0; ``None`` means no row is padded.
        ``logits_to_keep`` 0 keeps every position's logits, n > 0 the last n (as in transformers).
        """
        batch, new = input_ids.shape
        hidden = F.embedding(input_ids, self.embed)
        cos, sin = self.rotary(hidden, position_ids)
        tokens = _real_tokens(attention_mask, new)
        like = hidden.new_empty((batch, self.kv_heads, 0, self.head_dim))
        buffers = [layer.reserve(like, new) for layer in cache.buffered_layers]
        hidden = self.layers(
            hidden if tokens is None else _pack(hidden, tokens, batch, new),
            cos.unsqueeze(2),  # broadcast over heads: [batch, new, 1, head_dim]
            sin.unsqueeze(2),
            _attention_mask(attention_mask, new, cache.length + new, self.heads // self.kv_heads, input_ids.device),
            tokens,
            self.weights,
            [keys for keys, _ in buffers],
            [values for _, values in buffers],
            cache.length,
            (batch, new, self.heads, self.kv_heads, self.head_dim),
            self.eps,
            self.scale,
            self.onednn,
        )
        cache.advance(new)
        if tokens is not None:
            hidden = _unpack(hidden, tokens, batch, new)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return _linear(_rms_norm(hidden, self.norm, self.eps), self.lm_head, self.onednn)


# The layer stack and what it calls are written for TorchScript as well as Python (typing's generics, no closures):
# ``_script`` compiles them, and eager mode computes exactly the same where it cannot.


def _layers(
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    mask: Optional[torch.Tensor],  # noqa: UP045
    tokens: Optional[torch.Tensor],  # noqa: UP045
    weights: List[torch.Tensor],  # noqa: UP006
    keys: List[torch.Tensor],  # noqa: UP006
    values: List[torch.Tensor],  # noqa: UP006
    length: int,
    shape: Tuple[int, int, int, int, int],  # noqa: UP006
    eps: float,
    scale: float,
    onednn: bool,
) -> torch.Tensor:
    """The residual stream after every layer, from the new tokens' embeddings ``hidden``.

    ``shape`` is (batch, new, heads, kv_heads, head_dim). ``hidden`` is ``[batch, new, features]``, or
    ``[real, features]`` when ``tokens`` (flat indices of the real tokens in ``[batch * new]``) packs a left-padded
    prefill: its projections and MLP then run on the real tokens only (a batch of prompts of mixed lengths is often
    more than half padding), and only attention works in the padded layout. Each layer's keys and values go into
    columns ``length .. length + new`` of its cache buffers ``[batch, kv_heads, capacity, head_dim]``.
    """
    batch, new, heads, kv_heads, dim = shape
    group = heads // kv_heads
    for index in range(len(keys)):
        w = weights[6 * index : 6 * index + 6]
        qkv = _linear(_rms_norm(hidden, w[0], eps), w[1], onednn)
        if tokens is not None:
            qkv = _unpack(qkv, tokens, batch, new)
        qkv = qkv.view(batch, new, heads + 2 * kv_heads, dim)
        qk = _rotate(qkv[:, :, : heads + kv_heads], cos, sin)
        key_buffer, value_buffer = keys[index], values[index]
        key_buffer[:, :, length : length + new] = qk[:, :, heads:].transpose(1, 2)
        value_buffer[:, :, length : length + new] = qkv[:, :, heads + kv_heads :].transpose(1, 2)
        # Query heads h*group .. h*group+group-1 share key/value head h: make them that head's query rows.
        query = qk[:, :, :heads].transpose(1, 2).reshape(batch, kv_heads, group * new, dim)
        attended = F.scaled_dot_product_attention(
            query, key_buffer[:, :, : length + new], value_buffer[:, :, : length + new], attn_mask=mask, scale=scale
        )
        attended = attended.view(batch, heads, new, dim).transpose(1, 2).reshape(batch, new, heads * dim)
        if tokens is not None:
            attended = _pack(attended, tokens, batch, new)
        hidden = _linear_add(attended, hidden, w[2], onednn)
        gate, up = _linear(_rms_norm(hidden, w[3], eps), w[4], onednn).chunk(2, dim=-1)
        hidden = _linear_add(F.silu(gate) * up, hidden, w[5], onednn)
    return hidden


def _linear(x: torch.Tensor, weight: torch.Tensor, onednn: bool) -> torch.Tensor:
    """``x @ weight.T``. oneDNN's product on weights reordered once into its blocked layout runs these small-batch
    projections about twice as fast as the default (MKL) path on the AVX-512 CPUs measured, at batch 1 and 16 alike."""
    if onednn:
        scalars: List[Optional[Union[int, float, complex]]] = []  # noqa: UP006, UP007, UP045
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", scalars, "")
        return out
    return F.linear(x, weight)


def _linear_add(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, onednn: bool) -> torch.Tensor:
    """``residual + x @ weight.T``, the addition fused into the product where the kernel allows."""
    if onednn:
        summed: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, residual, weight, None, "add")
        return summed
    return residual + F.linear(x, weight)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(hidden, [weight.shape[0]], weight, eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _pack(padded: torch.Tensor, tokens: torch.Tensor, batch: int, new: int) -> torch.Tensor:
    """``[real, features]``: the rows of ``padded`` ``[batch, new, features]`` at the real tokens."""
    return padded.reshape(batch * new, padded.shape[-1]).index_select(0, tokens)


def _unpack(packed: torch.Tensor, tokens: torch.Tensor, batch: int, new: int) -> torch.Tensor:
    """``[batch, new, features]`` from the real tokens' rows; padding positions are zero."""
    padded = packed.new_zeros((batch * new, packed.shape[-1]))
    return padded.index_copy_(0, tokens, packed).view(batch, new, packed.shape[-1])


def _script(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``function`` compiled by TorchScript (a twentieth of a second), or as it is where that fails.

    Scripted, a forward is one call from Python that releases the interpreter lock for all of it: the HTTP event loop
    runs beside it instead of taking turns with several hundred operator calls per step, and each operator costs less
    to dispatch than from Python (see docs/benchmarks.md). TorchScript is deprecated in favour of ``torch.compile``,
    which would fuse more but compiles for minutes on two cores at every start; torch is pinned, and the eager
    fallback computes the same.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see above
            scripted: Callable[..., torch.Tensor] = torch.jit.script(function)
    except Exception:  # a build without TorchScript or oneDNN's operators: eager mode computes the same
        logger.warning("TorchScript could not compile the forward pass; running it eagerly", exc_info=True)
        return function
    return scripted


def _real_tokens(padding: torch.Tensor | None, new: int) -> torch.Tensor | None:
    """Flat indices of the new tokens that are not padding, or ``None`` when packing them would not pay."""
    if padding is None or new == 1:
        return None
    real = padding[:, -new:].reshape(-1).nonzero().squeeze(1)
    return None if real.numel() == padding.shape[0] * new else real


def _attention_mask(
    padding: torch.Tensor | None, new: int, total: int, group: int, device: torch.device
) -> torch.Tensor | None:
    """The boolean mask ``[batch, 1, group * new, total]`` (True = attend), or ``None`` when nothing is masked.

    The query rows are tiled per head of a group, as ``_attention`` lays the queries out. A padding position always
    sees itself, so that no query row is fully masked (which would make SDPA produce NaNs that spread through values).
    """
    if padding is None and new == 1:
        return None
    columns = torch.arange(total, device=device)
    positions = torch.arange(total - new, total, device=device)[:, None]
    causal = positions >= columns  # [new, total]
    if padding is None:
        mask = causal[None]
    else:
        mask = causal & (padding.bool()[:, None, :] | (positions == columns))
    return mask[:, None].repeat(1, 1, group, 1)
