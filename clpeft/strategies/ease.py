"""EASE (Zhou et al., CVPR 2024): an adapter per experience, prototypes of every class in every adapter's space, and
the prototypes old classes cannot have in newer spaces completed from class-to-class similarity.

- **Learning**: experience t adds a fresh PET instance (the scenario's: an AdaptFormer adapter beside every MLP,
  fed the residual stream, ReLU, dropout 0.1, scale 0.1); only it and a cosine proxy head over the experience's
  classes (σ·cos, σ learned from 1, weights uniform ±1/√D) train, with the cross-entropy over those classes.
  Earlier instances stay frozen.
- **Prototypes** (:class:`~clpeft.models.proto_matrix.ProtoMatrix`): after training, the mean feature of each new
  class (training data, test-time transforms) under every instance 0..t. For every old class (learned with
  instance i) and every later instance j ≤ t, its prototype under j is completed as the softmax-of-cosine
  (temperature ``tau``) weighted mean of the prototypes under j of the classes learned from j on, recomputed
  after every experience.
- **Prediction**: features under every instance (:class:`~clpeft.pet.multipass.MultiPassFeatures`: one forward
  per instance, the stock blocks before the first PET once; ``batched`` puts them in one forward); the logit of class c learned with instance i is
  cos(f_i, P[c, i]) + α/t · Σ_{j≠i} cos(f_j, P[c, j]) (``alpha``; t + 1 instances so far).

As the official code runs by default (``use_init_ptm`` and ``use_diagonal`` off, ``recalc_sim`` on, the big head's
σ = 1). The incremental linear head is not used: prediction is the prototype score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.evaluation.prediction import Prediction
from clpeft.models.proto_matrix import ProtoMatrix
from clpeft.pet.multipass import MultiPassFeatures
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


class CosineProxy(torch.nn.Module):
    """σ·cos(f, w) over one experience's classes: what an adapter trains against, dropped after its experience."""

    def __init__(self, dim: int, classes: int, generator: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = torch.nn.Parameter(torch.rand(classes, dim, generator=generator) * 2 * bound - bound)
        self.sigma = torch.nn.Parameter(torch.ones(1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * F.linear(F.normalize(features, dim=-1), F.normalize(self.weight, dim=-1))


@register("ease")
class EASE(CLStrategy):
    accepts_pet = ("adapter", "lora")
    requires_pet = True
    loss_scope = "current"
    keeps = ("names", "proto_state")

    @dataclass
    class Options:
        alpha: float = option(0.1, "weight of the other instances' cosines in a class's score (÷ their count)", ge=0.0)
        tau: float = option(1.0, "temperature of the similarity softmax that completes old classes' prototypes", gt=0.0)
        batched: bool = option(False, "the features under every instance in one forward of B·K rows through the PET "
                                      "mixture (fast only where it computes just the routed instance per row)")
        chunk: int | None = option(None, "with batched: instances per forward (null: all at once)", ge=1)

    def setup(self):
        self.names: list[str] = []
        self.protos = ProtoMatrix(self.model.head.num_classes, self.model.backbone.num_features).to(self.device)
        self.passes = MultiPassFeatures(self.model.backbone, self.pet)
        self.proxy = None

    # ------------------------------------------------------------------ the experience
    def before_experience(self):
        name = self.add_pet_instance(f"e{self.experience_index}")  # one instance per experience, named by it
        self.names.append(name)
        self.pet.activate(name)
        self.proxy = CosineProxy(self.model.backbone.num_features, len(self.current_classes),
                                 self.generator(700 + self.experience_index)).to(self.device)

    def trainable_parameters(self):
        proxy = list(self.proxy.parameters()) if self.proxy is not None else []  # gone once its experience ends
        return (self.pet.parameters(self.names[-1]) if self.names else []) + proxy

    def training_logits(self, x):
        """The proxy's logits in the current experience's columns (the loss reads only those)."""
        with self.autocast():
            proxy = self.proxy(self.model.features(x))
        logits = proxy.new_zeros(proxy.shape[0], self.model.head.num_seen)
        logits[:, self.current_classes.start:self.current_classes.stop] = proxy
        return logits

    def after_experience(self):
        self.freeze(self.pet.parameters(self.names[-1]))
        self.proxy = None
        t = self.protos.add_instance()
        features, labels = self.extract_features(self.experience_data, features=self._all_features)
        features = features.view(len(labels), len(self.names), -1)
        classes = torch.tensor(list(self.current_classes))
        for k in range(len(self.names)):
            means = torch.stack([features[labels == c, k].double().mean(0) for c in classes.tolist()])
            self.protos.fill(k, classes, means.float(), home=(k == t))
        home = self.protos.home.cpu()
        for i in range(t):  # every old experience's classes, in every later instance's space
            old = torch.nonzero(home == i).flatten()
            for j in range(i + 1, t + 1):
                self.protos.complete(old, target=j, donors=torch.nonzero(home >= j).flatten(), tau=self.options.tau)
        self.pet.activate(None)

    # ------------------------------------------------------------------ evaluation
    def _all_features(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.passes(self.model.adapter(x), self.names, batched=self.options.batched,
                               chunk=self.options.chunk).flatten(1).float()

    def predict(self, x: torch.Tensor) -> Prediction:
        if self.protos.instances == 0:
            return super().predict(x)
        features = self._all_features(x).view(x.shape[0], len(self.names), -1)
        return Prediction(logits=self.protos.scores(features, self.options.alpha),
                          features=features[:, -1])

    # ------------------------------------------------------------------ records and resume
    @property
    def proto_state(self) -> dict:
        return {k: v.cpu() for k, v in self.protos.state_dict().items()}

    @proto_state.setter
    def proto_state(self, state: dict) -> None:
        for _ in range(state["prototypes"].shape[1] - self.protos.instances):
            self.protos.add_instance()
        self.protos.load_state_dict({k: v.to(self.device) for k, v in state.items()})

    def after_resume(self, train_stream) -> None:
        for name in self.names:  # finished experiences' instances never train again
            self.freeze(self.pet.parameters(name))

    def summary(self) -> dict:
        per_instance = self.pet.num_parameters(self.names[0]) if self.names else 0
        return {"instances": len(self.names), "parameters_per_instance": per_instance,
                "forward_passes_per_test_sample": len(self.names)}
