"""Finetune: plain sequential training, the lower bound every continual learner must beat.

With a PET module it trains PET + head (sequential PET tuning); without, every weight.
"""
from clpeft.strategies.base import CLStrategy, register


@register("finetune")
class Finetune(CLStrategy):
    """Every experience in turn, cross-entropy over the classes seen so far; nothing kept against forgetting."""
