"""The error type of a user's mistake: a flag or input file that is not what a tool expects.

Library code raises it (or a subclass) with one sentence naming the flag or file and what was
expected; the entry scripts print that sentence, without a traceback, and exit with status 2.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A flag or an input file is wrong; ``str(error)`` is the one sentence to show."""


class CheckpointError(UsageError):
    """A checkpoint (model weights, or a training checkpoint folder) that cannot be loaded whole;
    ``str(error)`` is one sentence naming the file and what is wrong with it."""
