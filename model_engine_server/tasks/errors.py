"""The exception a task ends with when it fails for a reason the caller should read (stored in the result backend;
the gateway shows ``str(error)`` as the task's ``traceback``)."""

from __future__ import annotations


class AsyncTaskFailure(Exception):
    """A task failed for good; the message says why in words a user can act on."""
