"""Small pure pieces of the server, without the model."""

from __future__ import annotations

import pytest
import torch

from model_engine_server.inference.server.cli import derive_limits
from model_engine_server.inference.server.openai import StopTrimmer
from model_engine_server.inference.server.sampling import SamplingParams, TokenChooser


def test_stop_trimmer_holds_back_text_that_may_start_a_stop_string() -> None:
    trimmer = StopTrimmer(["\n\n"])

    sent = [trimmer.push(piece, final=False) for piece in ["Paris", ".", "\n", "\n", "The"]]

    assert "".join(sent) == "Paris."
    assert trimmer.stopped


def test_stop_trimmer_flushes_everything_at_the_end() -> None:
    trimmer = StopTrimmer(["STOP"])

    sent = trimmer.push("abc", final=False) + trimmer.push("de", final=True)

    assert sent == "abcde" and not trimmer.stopped


def test_limits_default_from_the_context_and_are_checked() -> None:
    limits = derive_limits(2048, None, None, None)

    assert (limits.max_input_tokens, limits.max_total_tokens) == (1536, 2048)
    with pytest.raises(ValueError, match="max-input-tokens"):
        derive_limits(2048, 4096, 2048, None)
    with pytest.raises(ValueError, match="max-batch-total-tokens"):
        derive_limits(2048, None, 4096, 1024)


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    chooser = TokenChooser(SamplingParams(seed=1, do_sample=True, top_p=0.7), torch.device("cpu"))
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))

    kept = torch.isfinite(chooser.warp(logits))

    assert kept.tolist() == [True, True, False, False]


def test_top_k_and_temperature_zero() -> None:
    top2 = TokenChooser(SamplingParams(seed=1, top_k=2), torch.device("cpu"))
    greedy = TokenChooser(SamplingParams(seed=1, do_sample=True, temperature=0.0), torch.device("cpu"))
    logits = torch.tensor([1.0, 3.0, 2.0, 0.0])

    assert torch.isfinite(top2.warp(logits)).tolist() == [False, True, True, False]
    assert greedy.params.sampling is False and greedy.choose(logits)[0] == 1


def test_repetition_penalty_lowers_seen_tokens() -> None:
    chooser = TokenChooser(SamplingParams(seed=1, repetition_penalty=2.0), torch.device("cpu"))
    logits = torch.tensor([2.0, -1.0, 2.0])

    penalized = chooser.penalize(logits, torch.tensor([0, 1]))

    assert penalized.tolist() == [1.0, -2.0, 2.0]
