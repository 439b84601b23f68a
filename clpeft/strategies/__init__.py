"""Strategies: clpeft's method API (``base``), the loop that runs it (``_engine``, private) and one file per method.

Everything a method file uses is exported here (``docs/write_a_method.md`` is the reference). The package
imports each of its modules, so a built-in method is one new file here and nothing else.
"""
import importlib
import pkgutil

from clpeft.config import TrainSettings
from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.models.heads import IncrementalHead
from clpeft.strategies.base import CLStrategy, NoOptions, Phase
from clpeft.strategies.registry import STRATEGIES, get_strategy, register
from clpeft.utils.seed import seeded_generator
from clpeft.utils.typed import option

# Every module of this package registers its methods on import: a built-in method is one file dropped here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "CLStrategy", "ClpeftError", "IncrementalHead", "NoOptions", "Phase", "Prediction",
           "TrainSettings", "get_strategy", "option", "register", "seeded_generator"]
