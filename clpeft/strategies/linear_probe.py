"""Linear probe: the backbone stays frozen and only the (growing) linear head trains."""
from clpeft.strategies.base import CLStrategy, register


@register("linear_probe")
class LinearProbe(CLStrategy):
    trains = "head"
    accepts_pet = False
