"""Strategies: the shared loop (``base``) and one file per method, looked up in a registry."""
from clpeft.strategies import avalanche_baselines, finetune, joint, lae, linear_probe, prototype, wa  # noqa: F401
from clpeft.strategies.base import STRATEGIES, CLStrategy, Prediction, TrainSettings, get_strategy, register

__all__ = ["STRATEGIES", "CLStrategy", "Prediction", "TrainSettings", "get_strategy", "register"]
