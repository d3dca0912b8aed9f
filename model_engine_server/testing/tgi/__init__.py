"""The test kit's fake TGI server: ``InstantTgiServer`` in-process, ``python -m model_engine_server.testing.tgi``
as a process."""

from model_engine_server.testing.tgi.server import VOCABULARY, InstantTgiServer, running_instant_tgi

__all__ = ["VOCABULARY", "InstantTgiServer", "instant_text", "running_instant_tgi"]


def instant_text(tokens: int) -> str:
    """What the instant server generates in ``tokens`` tokens: the first words of ``VOCABULARY``, each after a space."""
    return "".join(" " + VOCABULARY[i] for i in range(tokens))
