"""Strategies: the shared loop and method API (``base``) and one file per method, looked up in a registry.

What a method author needs: ``CLStrategy``, ``Phase``, ``Prediction``, ``register`` and ``option``. The
package imports each of its modules, so a built-in method is one new file here and nothing else.
"""
import importlib
import pkgutil

from clpeft.evaluation.prediction import Prediction
from clpeft.strategies.base import STRATEGIES, CLStrategy, Phase, TrainSettings, get_strategy, register
from clpeft.utils.typed import option

# Every module of this package registers its methods on import: a built-in method is one file dropped here.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "CLStrategy", "Phase", "Prediction", "TrainSettings", "get_strategy", "option", "register"]
