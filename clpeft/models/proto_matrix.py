"""Class prototypes in every PET instance's feature space: a (class × instance × D) matrix, for methods that score a
sample in every space (EASE; CL-LoRA's block scores).

An instance added after a class was learned never saw that class's data; :meth:`ProtoMatrix.complete` fills its
prototype there from class-to-class similarity measured where the class was learned: for an old class c (learned
with instance i) and a later instance j,

    P̂[c, j] = Σ_{c'} softmax_{c'}( cos(P[c, i], P[c', i]) / τ ) · P[c', j]

over donor classes c' whose prototypes under j were measured (and which have prototypes under i too).
:meth:`ProtoMatrix.scores` is the reweighted block cosine: for class c learned with instance i,
cos(f_i, P[c, i]) + α/(K − 1) · Σ_{j ≠ i} cos(f_j, P[c, j]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.models.heads import UNSEEN_LOGIT


class ProtoMatrix(torch.nn.Module):
    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.register_buffer("prototypes", torch.zeros(num_classes, 0, dim))
        self.register_buffer("measured", torch.zeros(num_classes, 0, dtype=torch.bool))  # from data, not completed
        self.register_buffer("home", torch.full((num_classes,), -1, dtype=torch.long))   # instance a class was learned with

    @property
    def instances(self) -> int:
        return self.prototypes.shape[1]

    def add_instance(self) -> int:
        """A new (empty) column; returns its index."""
        c, d = self.num_classes, self.dim
        self.prototypes = torch.cat([self.prototypes, self.prototypes.new_zeros(c, 1, d)], 1)
        self.measured = torch.cat([self.measured, self.measured.new_zeros(c, 1)], 1)
        return self.instances - 1

    @torch.no_grad()
    def fill(self, instance: int, classes: torch.Tensor, means: torch.Tensor, home: bool = False) -> None:
        """Measured prototypes of ``classes`` under ``instance`` (``home``: the instance they are learned with)."""
        if not 0 <= instance < self.instances:
            raise ClpeftError(f"prototype instance {instance} does not exist ({self.instances} added)")
        classes = torch.as_tensor(classes, device=self.prototypes.device)
        self.prototypes[classes, instance] = means.to(self.prototypes)
        self.measured[classes, instance] = True
        if home:
            self.home[classes] = instance

    @torch.no_grad()
    def complete(self, classes: torch.Tensor, target: int, donors: torch.Tensor, tau: float = 1.0) -> None:
        """Fill the prototypes of ``classes`` under instance ``target`` from the measured ones of ``donors`` there,
        weighted by the softmax of each class's cosine similarity to the donors in its home space."""
        classes = torch.as_tensor(classes, device=self.prototypes.device)
        donors = torch.as_tensor(donors, device=self.prototypes.device)
        if not bool(self.measured[donors, target].all()):
            raise ClpeftError(f"completion under instance {target} needs the donors' prototypes measured there")
        for i in self.home[classes].unique().tolist():
            if i < 0:
                raise ClpeftError("completion needs each class's home instance (fill it with home=True first)")
            group = classes[self.home[classes] == i]
            if not bool(self.measured[donors, i].all()):
                raise ClpeftError(f"completion needs the donors' prototypes under instance {i} too")
            sim = F.normalize(self.prototypes[group, i], dim=-1) @ F.normalize(self.prototypes[donors, i], dim=-1).T
            self.prototypes[group, target] = torch.softmax(sim / tau, dim=1) @ self.prototypes[donors, target]

    def scores(self, features: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
        """``[B, C]`` logits from features ``[B, K, D]`` (one row per instance, in order); classes with no home
        instance yet get ``UNSEEN_LOGIT``."""
        K = features.shape[1]
        if K != self.instances:
            raise ClpeftError(f"features come from {K} instances, the prototypes from {self.instances}")
        cos = torch.einsum("bkd,ckd->bck", F.normalize(features.float(), dim=-1), F.normalize(self.prototypes, dim=-1))
        known = self.home >= 0
        home = self.home.clamp_min(0)
        own = cos.gather(2, home.view(1, -1, 1).expand(cos.shape[0], -1, 1)).squeeze(2)          # [B, C]
        others = cos.sum(2) - own
        out = own + (alpha / (K - 1) if K > 1 else 0.0) * others
        return out.masked_fill(~known, UNSEEN_LOGIT)
