"""Avalanche's own regularisation and replay methods, run through clpeft's loop on clpeft streams.

Each is Avalanche's plugin (the same one its ``EWC``/``LwF``/``Replay`` templates use) on the
shared base, so they appear in the same accuracy matrix and report as every other strategy.
"""
from avalanche.training.plugins import EWCPlugin, LwFPlugin, ReplayPlugin

from clpeft.errors import ClpeftError
from clpeft.strategies.base import CLStrategy, register


class _AvalanchePluginStrategy(CLStrategy):
    trains = "pet"
    resumable = False  # the plugin's state (Fisher matrices, teacher, buffer) is not captured
    ddp_safe = False  # nor synchronised across ranks (the replay buffer changes the loader)

    def plugin(self, **options):
        raise NotImplementedError

    def configure(self, **options):
        try:
            self._avalanche_plugin = self.plugin(**options)
        except TypeError as exc:
            raise ClpeftError(f"bad option for strategy {self.name}: {exc}; check strategies.{self.name}.options") from exc

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.plugins.insert(0, self._avalanche_plugin)


@register("ewc")
class EWC(_AvalanchePluginStrategy):
    def plugin(self, ewc_lambda: float = 1000.0, mode: str = "separate", decay_factor=None):
        return EWCPlugin(ewc_lambda=ewc_lambda, mode=mode, decay_factor=decay_factor)


@register("lwf")
class LwF(_AvalanchePluginStrategy):
    def plugin(self, alpha: float = 1.0, temperature: float = 2.0):
        return LwFPlugin(alpha=alpha, temperature=temperature)


@register("replay")
class Replay(_AvalanchePluginStrategy):
    def plugin(self, mem_size: int = 200):
        return ReplayPlugin(mem_size=mem_size)

    def make_train_dataloader(self, **kwargs):
        # Avalanche's ReplayPlugin swaps in its own loader over the experience dataset and the buffer.
        in_memory, self.in_memory = self.in_memory, False
        try:
            super().make_train_dataloader(**kwargs)
        finally:
            self.in_memory = in_memory
