"""InfLoRA (Liang & Li, CVPR 2024): each experience's LoRA has its down-projection A designed, not learned, so
that the new update cannot interfere with what earlier experiences' inputs used.

One LoRA instance per experience on the K and V slices of every attention ``qkv`` (``--pet lora`` with
``parts: kv``; the scenario sets rank 10, scale 1, every block). Before an experience trains, the inputs of
each adapted layer are recorded on its data (:class:`~clpeft.pet.subspace.InputGram`); A is the top-``rank``
left singular vectors of that Gram matrix with the remembered subspace projected out, scaled by 1/√3, the same
A for K and V. A stays frozen: only the B matrices and the head train, with a cross-entropy over the current
experience's classes. After training the inputs are recorded again and the subspace memory grows by the
DualGPM rule (threshold from ``lamb`` to ``lame`` over the experiences). Prediction sums every instance.

As the official code runs: energies are squared singular values of the covariance (``energy: squared``;
``plain`` is the GPM rule), A is scaled by 1/√3 (``a_scale``). Unlike it, the Gram matrices are recorded with
test-time transforms (the official passes use training augmentation; identical on streams without augmentation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.pet.subspace import ENERGIES, InputGram, SubspaceMemory
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


@register("inflora")
class InfLoRA(CLStrategy):
    """A new LoRA per experience whose A spans input directions earlier experiences left free; only B trains."""

    accepts_pet = ("lora",)
    requires_pet = True
    loss_scope = "current"
    keeps = ("memory", "names")
    bank = "summed"

    @dataclass
    class Options:
        lamb: float = option(0.95, "energy kept after the first experience (ε₀)", gt=0.0, lt=1.0)
        lame: float = option(1.0, "energy the threshold reaches after the last experience", gt=0.0, le=1.0)
        energy: str = option("squared", "rank directions by squared singular values of the covariance (the "
                                        "official code) or by the singular values (GPM)", choices=ENERGIES)
        a_scale: float = option(1 / math.sqrt(3), "scale of the designed A (the official 1/√3)", gt=0.0)

    def setup(self):
        if self.n_experiences is None:
            raise ClpeftError("inflora's energy threshold grows over the stream, so it needs the number of "
                              "experiences up front; build it through clpeft.run")
        for name, layer in self.pet.layers.items():
            if getattr(layer, "is_conv", True):
                raise ClpeftError(f"inflora designs A from a Linear layer's inputs; {name} is not a Linear LoRA "
                                  "(use pets.lora on a ViT's attention qkv)")
        self.memory = SubspaceMemory(self.options.energy)
        self.names: list[str] = []

    # ------------------------------------------------------------------ the experience
    def before_experience(self):
        self.names = self.fold_over_budget(self.names, [1.0] * len(self.names))
        name = self.add_pet_instance(f"e{self.experience_index}")  # one instance per experience, named by it
        self.names.append(name)
        grams = self._input_grams()
        with torch.no_grad():
            for i, layer in enumerate(self.pet.layers.values()):
                U = torch.linalg.svd(self.memory.residual(grams[i], i), full_matrices=False)[0]
                instance = layer.instances[name]
                A = (U[:, : instance.lora_A[0].shape[0]].T * self.options.a_scale).to(instance.lora_A[0])
                for a in instance.lora_A:  # the same A for every slice (K and V)
                    a.copy_(A)

    def trainable_parameters(self):
        current = self.pet.named_parameters(self.names[-1])
        return [p for n, p in current.items() if ".lora_B." in n] + self.current_head_parameters()

    def training_logits(self, x):
        with self._summed():
            return super().training_logits(x)

    def after_experience(self):
        t = self.experience_index
        self.memory.update(self._input_grams(), self.memory.threshold(self.options.lamb, self.options.lame, t,
                                                                       self.n_experiences))

    # ------------------------------------------------------------------ evaluation
    def predict(self, x: torch.Tensor) -> Prediction:
        with self._summed():
            return super().predict(x)

    # ------------------------------------------------------------------ helpers
    def _summed(self):
        """Every instance so far, each with weight 1: the model InfLoRA trains and predicts with."""
        return self.pet.mixing(self.names, torch.ones(1, len(self.names), device=self.device))

    def _input_grams(self) -> list[torch.Tensor]:
        """Each adapted layer's token-averaged input Gram on this experience's data, under the summed model."""
        gram = InputGram(self.pet.layers)
        with gram.recording(), self._summed():
            self.extract_features(self.experience_data)
        return gram.grams()

    # ------------------------------------------------------------------ records
    def summary(self) -> dict:
        return {"subspace_dimension": [self.memory.dimension(i) for i in range(len(self.memory.bases))],
                "subspace_kind": list(self.memory.kinds),
                "trainable_per_experience": sum(p.numel() for p in self.trainable_parameters())}

    def report_metrics(self) -> dict[str, float]:
        if not self.memory.bases:
            return {}
        widths = [b.shape[0] for b in self.memory.bases]
        used = [self.memory.dimension(i) / w for i, w in enumerate(widths)]
        return {"input subspace used (mean share of width)": sum(used) / len(used)}
