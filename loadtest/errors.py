"""The one error a load tool reports instead of a traceback: the run could not go ahead."""

from __future__ import annotations


class LoadTestError(RuntimeError):
    """A scenario could not run (refused target, relay unreachable, bad parameters)."""
