"""Typed exceptions of the public API.

Every error nqrt raises on bad user input derives from `NqrtError`; the CLI prints
`error: <message>` on one line for these and exits non-zero. Anything else reaching
the CLI is a bug in nqrt and is reported as such.
"""


class NqrtError(Exception):
    """Base class of every error nqrt raises for bad input."""


class FormatError(NqrtError):
    """A `.nq` file (or a model file given to the converter) is malformed."""


class UnsupportedOpError(NqrtError):
    """The model uses operators (or operator attributes) nqrt cannot convert.

    `ops` maps each unsupported op type to the list of node names that use it.
    """

    def __init__(self, message: str, ops: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.ops = dict(ops or {})


def name_list(names, limit: int = 5) -> str:
    """The first `limit` names, then how many more: a one-line message stays short for a
    model with dozens of nodes of one unsupported op (the exception keeps every name)."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


class InputError(NqrtError):
    """Feeds given to a session (or calibration data) do not match the model."""


class ConversionError(NqrtError):
    """The converter cannot produce a valid integer model (e.g. degenerate calibration)."""
