"""Choosing the next token of each sequence: penalties, temperature, top-k/top-p warping, greedy or seeded sampling.

The semantics follow TGI's ``NextTokenChooser``: a request samples when ``do_sample`` is set or when any warper
(temperature != 1, top_k, top_p) is given; otherwise it is greedy. ``temperature == 0`` always means greedy. Every
sampling request owns a ``torch.Generator`` seeded with its seed, so the same seed and prompt give the same text no
matter which other requests share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    seed: int
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    @property
    def has_warpers(self) -> bool:
        return (
            (self.temperature is not None and self.temperature not in (0.0, 1.0))
            or bool(self.top_k)
            or (self.top_p is not None and self.top_p < 1.0)
        )

    @property
    def sampling(self) -> bool:
        if self.temperature == 0.0:
            return False
        return self.do_sample or self.has_warpers

    @property
    def has_penalties(self) -> bool:
        return (
            (self.repetition_penalty not in (None, 1.0)) or bool(self.frequency_penalty) or bool(self.presence_penalty)
        )


class TokenChooser:
    """Per-sequence sampling state: the parameters and, when sampling, a private seeded generator."""

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if params.sampling:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed)

    def penalize(self, logits: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Apply repetition and frequency penalties for the tokens in ``history`` to one row of logits."""
        params = self.params
        if params.repetition_penalty not in (None, 1.0):
            assert params.repetition_penalty is not None
            seen = logits.gather(0, history)
            seen = torch.where(seen < 0, seen * params.repetition_penalty, seen / params.repetition_penalty)
            logits = logits.scatter(0, history, seen)
        if params.frequency_penalty or params.presence_penalty:
            counts = torch.bincount(history, minlength=logits.shape[0]).to(logits.dtype)
            if params.frequency_penalty:
                logits = logits - params.frequency_penalty * counts
            if params.presence_penalty:
                logits = logits - params.presence_penalty * (counts > 0).to(logits.dtype)
        return logits

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        params = self.params
        if params.temperature not in (None, 0.0, 1.0):
            assert params.temperature is not None
            logits = logits / params.temperature
        if params.top_k:
            k = min(params.top_k, logits.shape[-1])
            threshold = torch.topk(logits, k).values[-1]
            logits = logits.masked_fill(logits < threshold, float("-inf"))
        if params.top_p is not None and params.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            # Drop tokens once the mass before them already reaches top_p; the best token always stays.
            drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= params.top_p
            drop = drop_sorted.scatter(0, order, drop_sorted)
            logits = logits.masked_fill(drop, float("-inf"))
        return logits

    def choose(self, logits: torch.Tensor) -> tuple[int, float]:
        """Pick one token from a processed row of logits; returns it and its log-probability."""
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if self.generator is None:
            token = int(torch.argmax(logprobs))
        else:
            token = int(torch.multinomial(logprobs.exp(), 1, generator=self.generator))
        return token, float(logprobs[token])


def choose_next_tokens(
    logits: torch.Tensor, choosers: list[TokenChooser], histories: list[list[int]]
) -> tuple[list[int], list[float]]:
    """Choose one token per row of ``logits`` (``[batch, vocab]``)."""
    tokens: list[int] = []
    logprobs: list[float] = []
    simple = [i for i, c in enumerate(choosers) if not c.params.sampling and not c.params.has_penalties]
    if simple:
        # Greedy rows without penalties, the common case, go through in one vectorised pass.
        rows = torch.tensor(simple, device=logits.device)
        row_logprobs = torch.log_softmax(logits.index_select(0, rows).float(), dim=-1)
        best_logprobs, best = row_logprobs.max(dim=-1)
        greedy = dict(zip(simple, zip(best.tolist(), best_logprobs.tolist(), strict=True), strict=True))
    else:
        greedy = {}
    for index, chooser in enumerate(choosers):
        if index in greedy:
            token, logprob = greedy[index]
        else:
            row = logits[index]
            if chooser.params.has_penalties:
                history = torch.tensor(histories[index], device=logits.device)
                row = chooser.penalize(row, history)
            token, logprob = chooser.choose(chooser.warp(row))
        tokens.append(token)
        logprobs.append(logprob)
    return tokens, logprobs
