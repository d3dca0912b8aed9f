"""A lean forward pass for Llama-architecture models (SmolLM2, Llama 2/3, TinyLlama), built from transformers' weights.

transformers' generic module stack costs about as much Python and per-op overhead per decode step as a small model's
matrix products: dozens of modules, keyword plumbing and mask building in every one of 30 layers. This forward does
the same arithmetic with fewer, larger operations:

- q/k/v and gate/up projections are each one matrix product (their weights concatenated once at load);
- rotary cos/sin are computed once per step for all layers, and applied to queries and keys in one go;
- the attention mask is built once per step, and not at all for a decode step without left padding;
- grouped-query attention at decode needs no copy of the cache: the query heads sharing a key/value head are laid out
  as that head's query rows (they all sit at the same position), so one SDPA call serves them without repeating K/V.
- a left-padded prefill computes its projections and MLP on the real tokens only (see ``_Step``).

Keys and values go into the same ``BatchKvCache`` (its layers' ``update``) as with the transformers forward, so the
cache layout, and everything the scheduler does with it, is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model_engine_server.inference.server.kv_cache import BatchKvCache

# oneDNN's matrix product on weights reordered once into its blocked layout runs these small-batch projections about
# twice as fast as the default (MKL) path on the AVX-512 CPUs measured (AMD EPYC), at batch 1 and 16 alike.
_ONEDNN = bool(torch.backends.mkldnn.is_available()) and hasattr(  # type: ignore[no-untyped-call]
    torch.ops.mkldnn, "_reorder_linear_weight"
)
_BATCH_HINT = 16  # oneDNN picks the weights' blocking for this many rows; any batch size still works


class _Projection:
    """``x @ weight.T``, with the weight prepared once for the fastest CPU kernel available."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.onednn = _ONEDNN and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, _BATCH_HINT) if self.onednn else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, self.weight, None, "none", [], "")
            return out
        return F.linear(x, self.weight)

    def plus(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``residual + x @ weight.T``, the addition fused into the product where the kernel allows."""
        if self.onednn:
            summed: torch.Tensor = torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, None, "add")
            return summed
        return residual + F.linear(x, self.weight)


@dataclass(frozen=True)
class _Layer:
    input_norm: torch.Tensor
    qkv: _Projection  # [(heads + 2 * kv_heads) * head_dim, hidden]
    out: _Projection
    post_norm: torch.Tensor
    gate_up: _Projection  # [2 * intermediate, hidden]
    down: _Projection


@dataclass(frozen=True)
class _Step:
    """What every layer of one forward shares: rotary factors, the mask, the cache, and which tokens are real.

    A left-padded prefill wastes the padding's share of every matrix product (over half of it for a batch of prompts of
    mixed lengths), so when ``tokens`` is set the projections and the MLP run on the real tokens only, packed into
    ``[real, hidden]``; only attention works in the padded ``[batch, new, ...]`` layout.
    """

    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor | None
    cache: BatchKvCache
    shape: tuple[int, int]  # batch, new
    tokens: torch.Tensor | None  # flat indices of the real tokens in [batch * new], or None for "all of them"

    def pack(self, padded: torch.Tensor) -> torch.Tensor:
        if self.tokens is None:
            return padded
        return padded.reshape(self.shape[0] * self.shape[1], -1).index_select(0, self.tokens)

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``[batch, new, features]``; padding positions are zero."""
        if self.tokens is None:
            return packed
        padded = packed.new_zeros((self.shape[0] * self.shape[1], packed.shape[-1]))
        return padded.index_copy_(0, self.tokens, packed).view(*self.shape, -1)


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
        self.lm_head = _Projection(model.lm_head.weight)
        self.layers = [_layer(block) for block in inner.layers]

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
        group = self.heads // self.kv_heads
        step = _Step(
            cos=cos.unsqueeze(2),  # broadcast over heads: [batch, new, 1, head_dim]
            sin=sin.unsqueeze(2),
            mask=_attention_mask(attention_mask, new, cache.length + new, group, input_ids.device),
            cache=cache,
            shape=(batch, new),
            tokens=_real_tokens(attention_mask, new),
        )
        hidden = step.pack(hidden)
        for index, layer in enumerate(self.layers):
            hidden = self._attention(layer, hidden, step, index)
            hidden = self._mlp(layer, hidden)
        hidden = step.unpack(hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.lm_head(_rms_norm(hidden, self.norm, self.eps))

    def _attention(self, layer: _Layer, hidden: torch.Tensor, step: _Step, index: int) -> torch.Tensor:
        """The residual stream after layer ``index``'s attention; appends this step's keys/values to the cache."""
        batch, new = step.shape
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        qkv = step.unpack(layer.qkv(_rms_norm(hidden, layer.input_norm, self.eps)))
        qkv = qkv.view(batch, new, heads + 2 * kv_heads, dim)
        qk = _rotate(qkv[:, :, : heads + kv_heads], step.cos, step.sin)
        query = qk[:, :, :heads]
        keys, values = step.cache.update(
            qk[:, :, heads:].transpose(1, 2), qkv[:, :, heads + kv_heads :].transpose(1, 2), index
        )
        group = heads // kv_heads
        # Query heads h*group .. h*group+group-1 share key/value head h: make them that head's query rows.
        query = query.transpose(1, 2).reshape(batch, kv_heads, group * new, dim)
        attended = F.scaled_dot_product_attention(query, keys, values, attn_mask=step.mask, scale=self.scale)
        attended = attended.view(batch, heads, new, dim).transpose(1, 2).reshape(batch, new, heads * dim)
        return layer.out.plus(step.pack(attended), hidden)

    def _mlp(self, layer: _Layer, hidden: torch.Tensor) -> torch.Tensor:
        """The residual stream after the layer's SwiGLU feed-forward."""
        gate, up = layer.gate_up(_rms_norm(hidden, layer.post_norm, self.eps)).chunk(2, dim=-1)
        return layer.down.plus(F.silu(gate) * up, hidden)


def _layer(block: Any) -> _Layer:
    attention, mlp = block.self_attn, block.mlp
    return _Layer(
        input_norm=block.input_layernorm.weight,
        qkv=_Projection(torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])),
        out=_Projection(attention.o_proj.weight),
        post_norm=block.post_attention_layernorm.weight,
        gate_up=_Projection(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
        down=_Projection(mlp.down_proj.weight),
    )


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(hidden, weight.shape, weight, eps)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


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
