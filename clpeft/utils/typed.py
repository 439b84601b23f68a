"""Build a dataclass from a user's mapping, naming any unknown key instead of ignoring it."""
from dataclasses import fields

from clpeft.errors import ClpeftError


def dataclass_from_dict(cls, values, what: str):
    """``cls(**values)``; ``what`` names the section in the error (e.g. "training setting")."""
    if not isinstance(values, dict):
        raise ClpeftError(f"{what} must be a mapping, got {type(values).__name__}; fix the scenario file")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ClpeftError(f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(names))}")
    return cls(**values)
