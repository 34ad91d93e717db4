"""Heli's error types.

Every problem caused by the user's input (a model file, a feed, a CLI
argument) is raised as a :class:`HeliError` subclass with a message that is a
full sentence naming the offending value.  The CLI turns these into one line
and exit code 2; anything else is a bug in Heli.
"""

from __future__ import annotations


class HeliError(Exception):
    """Base class of every error Heli raises on purpose."""


class ModelLoadError(HeliError):
    """A model file is missing, unreadable, truncated or malformed."""


class UnsupportedError(HeliError):
    """The model uses something Heli (or the chosen target) does not support."""


class ShapeError(HeliError):
    """Shapes or dtypes do not fit together (in the model or in a feed)."""


class InputError(HeliError):
    """A feed passed to ``run`` is missing, unexpected or of the wrong kind."""


class VerificationError(HeliError):
    """The IR broke one of its invariants (a Heli bug, reported clearly)."""


class TargetError(HeliError):
    """A target could not be found, loaded or used."""


class ExecutionError(HeliError):
    """Running a node failed on the given data (e.g. an index out of range)."""


class FallbackWarning(UserWarning):
    """Some nodes did not run on the requested target."""
