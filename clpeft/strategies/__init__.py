"""Strategies: the shared loop (``base``) and one file per method, looked up in a registry."""
from clpeft.strategies import avalanche_baselines, finetune, joint, linear_probe, prototype  # noqa: F401
from clpeft.strategies.base import STRATEGIES, CLStrategy, TrainSettings, get_strategy, register

__all__ = ["STRATEGIES", "CLStrategy", "TrainSettings", "get_strategy", "register"]
