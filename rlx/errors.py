"""rlx's error types: every failure a user can cause names where it happened and why."""
from __future__ import annotations


class RlxError(Exception):
    """Base of every error rlx raises on bad input."""


class UnknownOpError(RlxError):
    """An op name the registry does not know (message carries a did-you-mean)."""


class ArityError(RlxError):
    """An op got the wrong number of inputs."""


class AttrError(RlxError):
    """An attribute is unknown, missing, or of the wrong type."""


class ShapeError(RlxError):
    """Shapes of an op's inputs are incompatible."""


class DTypeError(RlxError):
    """Dtypes of an op's inputs are incompatible or unknown."""


class BindingError(RlxError):
    """A symbolic dim is unbound or bound inconsistently."""


class GraphError(RlxError):
    """A malformed graph: dangling value, cycle, bad JSON, duplicate name."""
