"""A second complete method: a head-only warm-up phase, then training with earlier classes' head rows frozen.

Each experience first trains only its own new head chunk for ``warmup`` epochs (the body stays as the last
experience left it), then trains body + new chunk with every earlier chunk frozen, so old classes keep the
rows they learned; the loss covers the current experience's classes only. It shows what a real method uses
beyond the first guide example: phases, the head's layout (``model.head.chunks``), what trains per phase,
kept state (``keeps``), a configuration rule, and a fact for the results file.

    clpeft run digits_b0_inc2 --import examples/plugins/head_freeze.py --strategy head_freeze --pet adapter
"""
from dataclasses import dataclass

from clpeft.strategies import CLStrategy, ClpeftError, Phase, option, register


@register("head_freeze")
class HeadFreeze(CLStrategy):
    """Warm up the new head chunk alone, then train the body and the new chunk; old chunks never move."""

    loss_scope = "current"  # cross-entropy over this experience's classes: old rows get no gradient anyway
    keeps = ("frozen_rows",)

    @dataclass
    class Options:
        warmup: int = option(1, "epochs of the head-only phase at the start of each experience", ge=0)

    @classmethod
    def check_config(cls, options, settings):
        if options.warmup >= settings.epochs:
            raise ClpeftError(f"head_freeze: warmup ({options.warmup}) must be below train.epochs ({settings.epochs}) "
                              "or the body never trains; lower --option warmup")

    def setup(self):
        self.frozen_rows = 0  # head rows (classes) frozen so far

    def phases(self):
        warm = self.options.warmup
        return [Phase("head", warm)] * (warm > 0) + [Phase("train", self.settings.epochs - warm)]

    def trainable_parameters(self):
        new_chunk = self.current_head_parameters()
        if self.phase is not None and self.phase.name == "head":
            return new_chunk
        return self.body_parameters() + new_chunk

    def after_experience(self):
        self.frozen_rows = self.model.head.num_seen  # from the next experience on, these rows never train

    def summary(self):
        return {"frozen_rows": self.frozen_rows}
