"""A complete clpeft method in one file: L2 anchoring (the "L2" baseline of continual-learning papers).

From experience 1 on, training adds λ/2 · ‖θ − θ*‖² to the loss, where θ* are the trainable weights as
they were at the end of the previous experience: the model may move, but pays for moving away from what
it knew. Use it without installing anything:

    clpeft run digits_b0_inc2 --import examples/plugins/l2_anchor.py --strategy l2_anchor --pet lora \
        --option lam=0.1
"""
from dataclasses import dataclass

import torch

from clpeft.strategies import CLStrategy, option, register


@register("l2_anchor")
class L2Anchor(CLStrategy):
    """Sequential training with an L2 pull towards the previous experience's weights."""

    keeps = ("anchor",)  # saved in every checkpoint, restored on --resume

    @dataclass
    class Options:
        lam: float = option(0.01, "strength λ of the pull towards the previous experience's weights", ge=0.0)

    def setup(self):
        self.anchor: dict[int, torch.Tensor] = {}  # index in trainable_parameters() → θ*

    def training_loss(self, logits, y, x):
        loss = super().training_loss(logits, y, x)  # cross-entropy over the seen classes
        params = list(self.trainable_parameters())
        pull = sum(((params[i] - old) ** 2).sum() for i, old in self.anchor.items())
        return loss + 0.5 * self.options.lam * pull

    def after_experience(self):
        # the head grows by one chunk per experience; the anchored tensors keep their indices
        self.anchor = {i: p.detach().clone() for i, p in enumerate(self.trainable_parameters())}

    def summary(self) -> dict:
        return {"anchored_tensors": len(self.anchor)}
