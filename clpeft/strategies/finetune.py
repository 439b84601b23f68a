"""Finetune: plain sequential training, the lower bound every continual learner must beat.

With a PET module it trains PET + head (sequential PET tuning); without, every weight.
"""
from clpeft.strategies.base import CLStrategy, register


@register("finetune")
class Finetune(CLStrategy):
    trains = "pet"
