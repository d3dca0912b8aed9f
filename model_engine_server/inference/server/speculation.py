"""Guessing a sequence's next tokens from its own text (n-gram "prompt lookup"), for speculative decoding.

At batch size 1 a decode step on CPU is bound by reading the weights, not by arithmetic: a forward over the next
token plus a few guessed ones costs little more than over the next token alone (SmolLM2-135M, one thread: 20.4 ms for
one token, 22.4 ms for three, 24.2 ms for five). Text often repeats itself — lists, code, numbers, a phrase of the
prompt — so the tokens that followed the last occurrence of the sequence's final few tokens are a cheap guess. The
scheduler verifies a guess in one forward and keeps the longest prefix the model agrees with, plus the model's own
next token, so greedy output is exactly what decoding one token at a time gives. TGI's ``--speculate`` works the same
way for models without Medusa heads; vLLM calls it the ``ngram`` method.
"""

from __future__ import annotations

from collections.abc import Sequence

# The longest and shortest tail looked up. A one-token tail matches almost everywhere and is mostly wrong (on the
# engine benchmark's prompts it guessed more but gained less than two tokens, by simulation of the accepted tokens).
MAX_NGRAM = 3
MIN_NGRAM = 2
# Tokens guessed per step by default: on those prompts three gained as much as four, and a rejected guess of three
# costs a tenth of a step (see docs/inference-server.md#speculative-decoding).
DEFAULT_SPECULATE = 3


def propose(history: Sequence[int], tokens: int, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> list[int]:
    """Up to ``tokens`` tokens that followed the latest earlier occurrence of ``history``'s last n tokens.

    Longer tails are tried first (a longer match predicts better); ``[]`` when no tail of ``min_ngram`` or more tokens
    occurs earlier, or when ``tokens`` is 0.
    """
    if tokens <= 0:
        return []
    for n in range(min(max_ngram, len(history) - 1), min_ngram - 1, -1):
        tail = list(history[-n:])
        last = tail[-1]
        # Scan backwards from the token before the tail's own start, so the match always has a continuation.
        for end in range(len(history) - 2, n - 2, -1):
            if history[end] == last and list(history[end - n + 1 : end + 1]) == tail:
                return list(history[end + 1 : end + 1 + tokens])
    return []
