"""The fake TGI server of the test kit: ``InstantTgiServer`` in-process, ``python -m testkit.tgi`` as a process."""

from testkit.tgi.server import VOCABULARY, InstantTgiServer, running_instant_tgi

__all__ = ["VOCABULARY", "InstantTgiServer", "running_instant_tgi"]
