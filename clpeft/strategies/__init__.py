"""Strategies: the shared loop (``base``) and one file per method, looked up in a registry."""
from clpeft.strategies import (avalanche_baselines, exssnet, finetune, jare, joint, lae, linear_probe,  # noqa: F401
                                prototype, wa)
from clpeft.strategies.base import STRATEGIES, CLStrategy, Prediction, TrainSettings, get_strategy, register

__all__ = ["STRATEGIES", "CLStrategy", "Prediction", "TrainSettings", "get_strategy", "register"]
