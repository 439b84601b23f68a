"""The strategy registry: ``@register("name")`` on a class, ``get_strategy(name)`` to find it (built-in files,
``--import``-ed plugins and entry points alike)."""
from __future__ import annotations

from clpeft.errors import ClpeftError

STRATEGIES: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a strategy to the registry under ``name``."""

    def wrap(cls):
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ClpeftError(f"strategy {name!r} is registered twice ({STRATEGIES[name].__module__} and {cls.__module__}); "
                              "rename one")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def get_strategy(name: str) -> type:
    import clpeft.strategies  # noqa: F401 - registers the built-in strategies
    from clpeft.plugins import lookup

    return lookup(STRATEGIES, name, "clpeft.strategies", "strategy")
