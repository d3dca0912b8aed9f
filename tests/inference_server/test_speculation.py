"""Speculative decoding: guessed tokens make a lone greedy request faster and never change what it generates.

The guessing itself is tested on token lists; the scheduler on the real model, in this process, against the same
scheduler with guessing off.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from model_engine_server.inference.server.events import ErrorEvent, Event, Finished, TokenEvent
from model_engine_server.inference.server.metrics import ServerMetrics
from model_engine_server.inference.server.sampling import SamplingParams
from model_engine_server.inference.server.scheduler import BatchLimits, GenerationRequest, Scheduler
from model_engine_server.inference.server.speculation import propose
from tests.inference_server.test_forward import tiny_llama

if TYPE_CHECKING:
    from model_engine_server.inference.server.engine import ModelRunner


def test_the_tokens_after_the_latest_earlier_occurrence_of_the_tail_are_proposed() -> None:
    history = [5, 6, 7, 1, 5, 6, 8, 9, 5, 6]
    # The tail (5, 6) occurred twice before; the latest occurrence was followed by 8, 9, 5.
    assert propose(history, 3) == [8, 9, 5]
    assert propose(history, 1) == [8]


def test_a_longer_matching_tail_wins_over_a_more_recent_shorter_one() -> None:
    history = [1, 2, 3, 40, 41, 9, 2, 3, 50, 1, 2, 3]
    assert propose(history, 2) == [40, 41]  # (1, 2, 3) beats the later (2, 3) → 50


def test_nothing_is_proposed_without_a_repeated_tail_of_two_tokens() -> None:
    assert propose([1, 2, 3, 4, 5], 3) == []
    assert propose([7, 1, 7], 3) == []  # a single repeated token is too weak a hint
    assert propose([1, 2, 1, 2], 0) == []
    assert propose([], 3) == []


def test_a_proposal_near_the_end_is_shorter() -> None:
    assert propose([4, 4, 4], 3) == [4]  # the only earlier (4, 4) ends one token before the tail


@dataclass
class Outcome:
    finished: Finished
    streamed: list[int]


def generate(
    runner: ModelRunner, metrics: ServerMetrics, prompt: str | list[int], speculate: int, **request: object
) -> Outcome:
    """One streamed greedy request through a scheduler of its own, alone in the batch."""
    scheduler = Scheduler(runner, BatchLimits(), metrics, speculate=speculate)
    events: list[Event] = []
    done = threading.Event()

    def sink(event: Event) -> None:
        events.append(event)
        if isinstance(event, ErrorEvent) or event.finished is not None:
            done.set()

    scheduler.start()
    try:
        ids = runner.tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt
        sampling = SamplingParams(seed=0)
        scheduler.submit(GenerationRequest(ids, sampling=sampling, sink=sink, stream=True, **request))  # type: ignore[arg-type]
        assert done.wait(timeout=300), "the request did not finish"
    finally:
        scheduler.stop()
    tokens = [event for event in events if isinstance(event, TokenEvent)]
    assert len(tokens) == len(events) and tokens[-1].finished is not None, events[-1]
    return Outcome(tokens[-1].finished, [event.token.id for event in tokens])


def counter(metrics: ServerMetrics, outcome: str) -> float:
    return metrics.speculative_tokens.labels(outcome)._value.get()  # type: ignore[no-any-return]


# Lists, numbers and code repeat themselves (guesses get accepted); prose mostly does not (guesses get rejected).
PROMPTS = ["1, 2, 3, 4, 5, 6, 7, 8,", "List five fruits and their colours:", "Here is a list of ten animals:\n1."]


@pytest.mark.model
@pytest.mark.parametrize("prompt", PROMPTS)
def test_guessing_gives_exactly_the_tokens_of_one_at_a_time_decoding(model_runner: ModelRunner, prompt: str) -> None:
    plain = generate(model_runner, ServerMetrics(), prompt, speculate=0, max_new_tokens=48)
    metrics = ServerMetrics()
    guessed = generate(model_runner, metrics, prompt, speculate=3, max_new_tokens=48)

    assert [t.id for t in guessed.finished.tokens] == [t.id for t in plain.finished.tokens]
    assert guessed.streamed == [t.id for t in guessed.finished.tokens]  # every token streamed once, in order
    assert guessed.finished.generated_text == plain.finished.generated_text
    assert guessed.finished.reason == plain.finished.reason == "length"
    for ours, theirs in zip(guessed.finished.tokens, plain.finished.tokens, strict=True):
        assert ours.logprob == pytest.approx(theirs.logprob, abs=1e-4)
    assert counter(metrics, "accepted") > 0  # the guesses did save steps


@pytest.mark.model
def test_a_rejected_guess_leaves_no_trace_in_later_tokens(model_runner: ModelRunner) -> None:
    prompt = "Here is a list of ten animals:\n1."
    plain = generate(model_runner, ServerMetrics(), prompt, speculate=0, max_new_tokens=64)
    metrics = ServerMetrics()
    guessed = generate(model_runner, metrics, prompt, speculate=3, max_new_tokens=64)

    assert counter(metrics, "rejected") > 0  # some guesses were wrong and their key/values were dropped
    assert [t.id for t in guessed.finished.tokens] == [t.id for t in plain.finished.tokens]


@pytest.mark.model
def test_limits_and_stop_sequences_end_a_guessing_request_where_they_end_a_plain_one(model_runner: ModelRunner) -> None:
    prompt = "1, 2, 3, 4, 5, 6, 7, 8,"
    for request in ({"max_new_tokens": 7}, {"max_new_tokens": 40, "stop": (" 13,",)}):
        plain = generate(model_runner, ServerMetrics(), prompt, speculate=0, **request)
        guessed = generate(model_runner, ServerMetrics(), prompt, speculate=3, **request)
        assert guessed.finished.generated_text == plain.finished.generated_text
        assert guessed.finished.reason == plain.finished.reason
        assert len(guessed.finished.tokens) == len(plain.finished.tokens)
    assert len(plain.finished.tokens) < 40 and plain.finished.reason == "stop_sequence"


@pytest.mark.model
@pytest.mark.parametrize("overrides", [{}, {"attention_bias": True}], ids=["our-forward", "transformers-forward"])
def test_both_forward_passes_verify_guesses_exactly(model_runner: ModelRunner, overrides: dict[str, bool]) -> None:
    """A small random Llama, on our forward and (with attention biases) on transformers': it repeats itself a lot."""
    from model_engine_server.inference.server.engine import ModelRunner

    model = tiny_llama(**overrides)
    model.generation_config.eos_token_id = None  # its random logits must not stop it early
    runner = ModelRunner(model, model_runner.tokenizer, model_runner.device)  # ids below 97 decode with any vocab
    assert (runner.lean is None) == bool(overrides)
    prompt = [30, 31, 32, 33, 30, 31, 32, 40]
    plain = generate(runner, ServerMetrics(), prompt, speculate=0, max_new_tokens=40)
    metrics = ServerMetrics()
    guessed = generate(runner, metrics, prompt, speculate=3, max_new_tokens=40)

    assert [t.id for t in guessed.finished.tokens] == [t.id for t in plain.finished.tokens]
    assert counter(metrics, "accepted") > 0
