"""Streaming detokenization: the text each new token adds, without splitting multi-byte characters.

Decoding a token on its own loses leading spaces and breaks characters spread over several byte-level tokens, so
(like TGI and vLLM) we decode a short window before and after the new token and emit the difference, holding text
back while it ends in an incomplete character.
"""

from __future__ import annotations

from typing import Any

# Prompt tokens kept as left context for the first generated tokens.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_ids: list[int]) -> None:
        # The Rust tokenizer decodes several times faster than the Python wrapper; this runs per token per step.
        self._decode = _decoder(tokenizer)
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (possibly empty while a character is incomplete)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full: str = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
            return full[len(prefix) :]
        return ""


def _decoder(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False)
