"""Typed settings: a user's mapping checked against a dataclass's annotations before anything runs.

Every configuration section (stream, model, train, PET, test-time adaptation, strategy options) is a
dataclass. :func:`dataclass_from_dict` names unknown keys, converts what is unambiguous (an int where a
float is wanted; ``"1e-3"``, which YAML 1.1 reads as a string, where a float is wanted), and refuses
everything else with one line that names the setting and the fix: ``seed: 1.7`` is not silently run as
seed 1, ``lr: .nan`` is not passed on to torch. Range checks and documentation live in field metadata
(:func:`option`), so ``clpeft list --options`` can print them and checks run where values enter.
"""
from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any

from clpeft.errors import ClpeftError

FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def option(default: Any = MISSING, doc: str = "", *, choices: tuple | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None, default_factory: Any = MISSING):
    """A dataclass field with a one-line ``doc`` and checks (``choices``, bounds ``ge``/``gt``/``le``/``lt``)."""
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return {int: "integer", float: "number", bool: "true/false", str: "text", dict: "mapping", list: "list",
            tuple: "list"}.get(tp, getattr(tp, "__name__", str(tp)))


class _Mismatch(Exception):
    pass


def coerce(value: Any, tp, where: str) -> Any:
    """``value`` as type ``tp`` (an annotation), or a ClpeftError naming ``where`` and what was expected."""
    try:
        return _coerce(value, tp)
    except _Mismatch:
        shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
        raise ClpeftError(f"{where} must be {_article(type_name(tp))}, got {shown}; fix it in the scenario file "
                          "or on the command line") from None


def _article(name: str) -> str:
    return name if " " in name or name in ("null", "true/false", "text") else f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _coerce(value, tp):
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        # exact type first, so that 3 stays an int in ``int | float`` and "abc" a str in ``str | int``
        for arg in args:
            if arg is not type(None) and typing.get_origin(arg) is None and type(value) is arg:
                return value
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items = [_coerce(v, args[0]) for v in value] if args else list(value)
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and FLOAT_TEXT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value


def check_bounds(value, meta: dict, where: str) -> None:
    """The field's ``choices`` and bounds; floats must also be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ClpeftError(f"{where} must be a finite number, got {value}; fix it in the scenario file or on the command line")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ClpeftError(f"{where} must be one of {', '.join(map(str, choices))}; got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for key, ok, text in (("ge", lambda a, b: a >= b, "≥"), ("gt", lambda a, b: a > b, ">"),
                          ("le", lambda a, b: a <= b, "≤"), ("lt", lambda a, b: a < b, "<")):
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            raise ClpeftError(f"{where} must be {text} {bound}, got {value}")


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def validate_fields(obj, prefix: str = "") -> None:
    """Check (and convert where unambiguous) every field of a dataclass instance in place."""
    types_ = hints(type(obj))
    for f in fields(obj):
        where = f"{prefix}.{f.name}" if prefix else f.name
        value = coerce(getattr(obj, f.name), types_[f.name], where)
        check_bounds(value, dict(f.metadata), where)
        object.__setattr__(obj, f.name, value)


class Settings:
    """Base of clpeft's configuration dataclasses: values are checked however the object is made
    (``section`` prefixes the names in errors, e.g. ``train.lr``)."""

    section = ""

    def __post_init__(self):
        validate_fields(self, self.section)


def dataclass_from_dict(cls, values, what: str, prefix: str | None = None):
    """``cls(**values)`` with every value type-checked, converted where unambiguous and range-checked.

    ``what`` names the section in errors about unknown keys (e.g. "training setting"); ``prefix`` is the
    dotted path shown for a bad value (e.g. ``train`` gives ``train.lr``)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ClpeftError(f"{what} must be a mapping, got {type(values).__name__}; fix the scenario file")
    names = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        raise ClpeftError(f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(names))}")
    types_ = hints(cls)
    converted = {}
    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else key
        value = coerce(value, types_[key], where)
        check_bounds(value, dict(names[key].metadata), where)
        converted[key] = value
    return cls(**converted)


def describe_fields(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, doc) of every field, for ``clpeft list --options``."""
    types_ = hints(cls)
    rows = []
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else "required")
        doc = f.metadata.get("doc", "") if f.metadata else ""
        choices = f.metadata.get("choices") if f.metadata else None
        if choices:
            doc = f"{doc} ({' | '.join(map(str, choices))})".strip()
        rows.append((f.name, type_name(types_[f.name]), repr(default), doc))
    return rows


def is_config(obj) -> bool:
    return is_dataclass(obj) and not isinstance(obj, type)


def check_milestones(values: list | None, where: str) -> None:
    """Scheduler milestones are epochs: positive and increasing (MultiStepLR silently ignores the others)."""
    if values is None:
        return
    if any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ClpeftError(f"{where} must be increasing epoch numbers ≥ 1, got {list(values)}; e.g. [60, 100, 140]")
