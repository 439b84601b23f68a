"""SD-LoRA (Wu et al., ICLR 2025): earlier experiences' LoRAs become fixed *directions* whose magnitudes keep
learning; each experience adds a new LoRA.

One LoRA instance per experience on the Q and V slices of every attention ``qkv`` (``--pet lora`` with
``parts: qv``; the scenario sets rank 10, scale 1, every block). The update of a layer in experience t is
α_t·B_t A_t x + Σ_{i<t} α_i·B_i A_i x / (‖B_i‖_F ‖A_i‖_F): the current pair trains as a plain LoRA, earlier pairs
are frozen directions (normalised per slice), and the α are scalars shared by every layer and by Q and V, all of them
trained (the bank's mixture weights). The loss is a cross-entropy over the current experience's classes;
prediction runs the same sum over every instance.

As the official code runs: every magnitude restarts at 0.8 when an experience begins (it rebuilds the model and
loads no earlier values), so the function changes at each boundary; ``magnitude_reset: false`` carries the
learned magnitudes over instead. The official code's file-based state, second ViT copy and per-forward layer
construction are not reproduced (one model, the bank's batched sum).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


class Magnitudes(nn.Module):
    """One learned scalar per experience's LoRA, shared by every layer (saved and resumed with the model)."""

    def __init__(self, n: int, init: float):
        super().__init__()
        self.values = nn.Parameter(torch.full((n,), float(init)))


@register("sd_lora")
class SDLoRA(CLStrategy):
    """A new LoRA per experience; earlier ones are frozen normalised directions whose shared magnitudes keep training."""

    accepts_pet = ("lora",)
    requires_pet = True
    loss_scope = "current"
    keeps = ("names",)
    bank = "summed"

    @dataclass
    class Options:
        magnitude_init: float = option(0.8, "value every magnitude starts at (the official 0.8)")
        magnitude_reset: bool = option(True, "restart every magnitude at magnitude_init when an experience begins "
                                             "(the official code); false: carry the learned values over")

    def setup(self):
        if self.n_experiences is None:
            raise ClpeftError("sd_lora holds one magnitude per experience, so it needs the number of experiences "
                              "up front; build it through clpeft.run")
        self.model.extras["sd_lora_magnitudes"] = Magnitudes(self.n_experiences, self.options.magnitude_init).to(
            self.device)
        self.names: list[str] = []

    @property
    def magnitudes(self) -> nn.Parameter:
        return self.model.extras["sd_lora_magnitudes"].values

    # ------------------------------------------------------------------ the experience
    def before_experience(self):
        self._as_directions(self.names)  # the previous experience's pair is a direction from now on
        kept = self.fold_over_budget(self.names, self.magnitudes[: len(self.names)].tolist())
        if len(kept) < len(self.names):  # folded with the magnitudes they ended with; the rest move up
            with torch.no_grad():
                self.magnitudes[: len(kept)] = self.magnitudes[len(self.names) - len(kept): len(self.names)].clone()
            self.names = kept
        name = self.add_pet_instance(f"e{self.experience_index}")  # one instance per experience, named by it
        self.names.append(name)
        if self.options.magnitude_reset:
            with torch.no_grad():
                self.magnitudes[: len(self.names)] = self.options.magnitude_init
        elif len(self.names) > 1:  # carried over: only the new pair starts at the initial value
            with torch.no_grad():
                self.magnitudes[len(self.names) - 1] = self.options.magnitude_init

    def trainable_parameters(self):
        return self.pet.parameters(self.names[-1]) + [self.magnitudes] + self.current_head_parameters()

    def training_logits(self, x):
        with self._summed():
            return super().training_logits(x)

    # ------------------------------------------------------------------ evaluation
    def predict(self, x: torch.Tensor) -> Prediction:
        with self._summed():
            return super().predict(x)

    # ------------------------------------------------------------------ helpers
    def _summed(self):
        """Σ_i α_i · instance_i over every instance so far (earlier ones as normalised directions)."""
        return self.pet.mixing(self.names, self.magnitudes[None, : len(self.names)])

    def _as_directions(self, names: list[str]) -> None:
        for layer in self.pet.layers.values():
            for name in names:
                layer.instances[name].direction_only = True

    def after_resume(self, train_stream) -> None:
        self._as_directions(self.names[:-1])  # the last finished pair turns into a direction when the next begins

    # ------------------------------------------------------------------ records
    def summary(self) -> dict:
        return {"magnitudes": [round(float(m), 6) for m in self.magnitudes.detach()[: len(self.names)]],
                "magnitude_reset": self.options.magnitude_reset,
                "lora_parameters_per_experience": self.pet.num_parameters(self.names[-1]) if self.names else 0}
