"""The error that ends ``model-engine serve`` before it runs, with a message that says what to do."""

from __future__ import annotations


class StartupError(Exception):
    """The platform cannot start; the message says why and what to do."""
