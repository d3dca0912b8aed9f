"""The built-in server's own Llama forward pass computes what transformers computes.

Greedy continuations must be token-for-token those of transformers' reference forward, for one prompt alone and
for left-padded batches; logits agree to float32 rounding (the fused projections and oneDNN kernels sum in another
order, which moves logits by about 1e-4 and never changed a greedy token in these checks).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from model_engine_server.inference.server import llama
from model_engine_server.inference.server.engine import ModelRunner
from model_engine_server.inference.server.kv_cache import BatchKvCache

PROMPTS = [
    "def quicksort(items):",
    "Once upon a time, in a land far away, there lived a",
    "The three laws of thermodynamics are",
]
STEPS = 16
LOGIT_TOLERANCE = 2e-3


def reference_greedy(model: Any, prompt: list[int], steps: int) -> list[int]:
    """transformers' own forward and cache, one sequence alone: nothing of ours is involved."""
    chosen: list[int] = []
    with torch.inference_mode():
        out = model(torch.tensor([prompt]), use_cache=True)
        for _ in range(steps):
            chosen.append(int(out.logits[0, -1].argmax()))
            out = model(torch.tensor([chosen[-1:]]), past_key_values=out.past_key_values, use_cache=True)
    return chosen


def runner_greedy(runner: ModelRunner, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Our prefill and decode steps, all prompts in one left-padded batch."""
    result = runner.prefill([None] * len(prompts), prompts, want_prompt_logprobs=False)
    chosen = [result.last_logits.argmax(-1).tolist()]
    batch = result.batch.with_next_tokens(chosen[-1])
    for _ in range(steps - 1):
        batch, logits = runner.decode(batch)
        chosen.append(logits.argmax(-1).tolist())
        batch = batch.with_next_tokens(chosen[-1])
    return [list(row) for row in zip(*chosen, strict=True)]


@pytest.mark.model
@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["alone", "left-padded-batch"])
def test_greedy_tokens_are_those_of_the_transformers_forward(model_runner: ModelRunner, prompts: list[str]) -> None:
    assert model_runner.lean is not None  # the bundled SmolLM2 is a Llama: it runs on our forward
    ids = [model_runner.tokenizer(p)["input_ids"] for p in prompts]
    assert len({len(i) for i in ids}) == len(ids)  # different lengths, so the batch really is padded

    ours = runner_greedy(model_runner, ids, STEPS)

    assert ours == [reference_greedy(model_runner.model, i, STEPS) for i in ids]


@pytest.mark.model
def test_prefill_on_top_of_cached_tokens_gives_the_one_pass_logits(model_runner: ModelRunner) -> None:
    """A prompt computed in two chunks (as after a prefix-cache hit) ends with the logits of one full pass."""
    forward = model_runner.lean
    assert forward is not None
    ids = torch.tensor([model_runner.tokenizer(PROMPTS[1])["input_ids"]])
    positions = torch.arange(ids.shape[1])[None]
    cache = BatchKvCache.empty(model_runner.num_layers)

    forward(ids[:, :5], None, positions[:, :5], cache)
    chunked = forward(ids[:, 5:], None, positions[:, 5:], cache, logits_to_keep=0)

    with torch.inference_mode():
        whole = model_runner.model(ids).logits[:, 5:]
    torch.testing.assert_close(chunked, whole, atol=LOGIT_TOLERANCE, rtol=0)


def tiny_llama(**overrides: Any) -> Any:
    shape = {"vocab_size": 97, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2}
    heads = {"num_attention_heads": 8, "num_key_value_heads": 2, "max_position_embeddings": 256}
    config = LlamaConfig(**shape, **heads, **overrides)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            }
        },
    ],
    ids=["default-rope", "llama3-rope"],
)
def test_padded_batch_logits_match_transformers_for_other_llama_shapes(overrides: dict[str, Any]) -> None:
    """Four query heads per key/value head and a scaled rope: rows with and without left padding, then a step."""
    model = tiny_llama(**overrides)
    forward = llama.LlamaForward(model)
    ids = torch.randint(0, 97, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # row 1 is a 5-token prompt, left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = BatchKvCache.empty(2)

    ours = forward(ids, mask, positions, cache, logits_to_keep=0)
    with torch.inference_mode():
        reference = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(ours[0], reference[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[1, 4:], reference[1, 4:], atol=1e-4, rtol=0)  # padding positions are don't-care

    step = torch.tensor([[5], [7]])
    ours_next = forward(step, torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1), positions[:, -1:] + 1, cache)
    with torch.inference_mode():
        full = torch.cat([ids, step], 1)
        full_mask = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1)
        reference_next = model(
            input_ids=full, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)
        ).logits[:, -1:]
    torch.testing.assert_close(ours_next, reference_next, atol=1e-4, rtol=0)


def test_other_architectures_keep_the_transformers_forward() -> None:
    model = tiny_llama(attention_bias=True)  # q/k/v biases: not a shape our forward computes

    assert not llama.supports(model)
    assert llama.supports(tiny_llama())
