"""Strategies: the shared loop and method API (``base``) and one file per method, looked up in a registry.

What a method author needs: ``CLStrategy``, ``Phase``, ``Prediction``, ``register`` and ``option``.
"""
from clpeft.evaluation.prediction import Prediction
from clpeft.strategies import (aper, avalanche_baselines, coda_prompt, dualprompt, exssnet, finetune,  # noqa: F401
                               jare, joint, l2p, lae, linear_probe, prototype, ranpac, slca, wa)
from clpeft.strategies.base import STRATEGIES, CLStrategy, Phase, TrainSettings, get_strategy, register
from clpeft.utils.typed import option

__all__ = ["STRATEGIES", "CLStrategy", "Phase", "Prediction", "TrainSettings", "get_strategy", "option", "register"]
