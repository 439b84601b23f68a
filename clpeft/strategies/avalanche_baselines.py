"""Avalanche's own regularisation and replay methods, run through clpeft's loop on clpeft streams.

Each is Avalanche's plugin (the same one its ``EWC``/``LwF``/``Replay`` templates use) on the
shared base, so they appear in the same accuracy matrix and report as every other strategy.
"""
from dataclasses import asdict, dataclass

from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin

from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


class AvalanchePluginStrategy(CLStrategy):
    resumable = False  # the plugin's state (Fisher matrices, teacher, buffer) is not captured
    ddp_safe = False  # nor synchronised across ranks (the replay buffer changes the loader)
    plugin_class = None

    def avalanche_plugins(self) -> list:
        return [self.plugin_class(**asdict(self.options))]


@register("ewc")
class EWC(AvalanchePluginStrategy):
    plugin_class = EWCPlugin

    @dataclass
    class Options:
        ewc_lambda: float = option(1000.0, "weight of the EWC penalty", ge=0.0)
        mode: str = option("separate", "one Fisher per experience, or one running one", choices=("separate", "online"))
        decay_factor: float | None = option(None, "online mode: decay of the running Fisher", ge=0.0, le=1.0)


@register("lwf")
class LwF(AvalanchePluginStrategy):
    plugin_class = LwFPlugin

    @dataclass
    class Options:
        alpha: float = option(1.0, "weight of the distillation loss", ge=0.0)
        temperature: float = option(2.0, "distillation temperature", gt=0.0)


@register("replay")
class Replay(AvalanchePluginStrategy):
    plugin_class = ReplayPlugin
    tensor_batches = False  # Avalanche's ReplayPlugin swaps in its own loader over the experience and the buffer

    @dataclass
    class Options:
        mem_size: int = option(200, "replay buffer size (samples)", ge=1)
