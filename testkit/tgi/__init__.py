"""The fake TGI server of the test kit: ``InstantTgiServer`` in-process, ``python -m testkit.tgi`` as a process."""

from testkit.tgi.server import VOCABULARY, InstantTgiServer, running_instant_tgi

__all__ = ["VOCABULARY", "InstantTgiServer", "instant_text", "running_instant_tgi"]


def instant_text(tokens: int) -> str:
    """What the instant server generates in ``tokens`` tokens: the first words of ``VOCABULARY``, each after a space."""
    return "".join(" " + VOCABULARY[i] for i in range(tokens))
