"""LAE (Gao et al., ICCV 2023): learning, accumulation and ensemble over any PET module.

- **Learning**: the online PET (the injected instance) and the heads train on the current
  experience with the loss over that experience's classes only; from experience 1 on, the PET is
  frozen for the first ``pet_warmup_epochs`` epochs so the new head warms up alone.
- **Accumulation**: at the start of experience 1 the offline PET is born as a copy of the online
  one; after every optimizer step it moves by EMA: θ_off ← d·θ_off + (1 − d)·θ_on.
- **Ensemble**: prediction = per-class max of the two experts' softmaxes (one shared head); the
  experts share the backbone up to the first PET block, which runs once.

Faithful to the official code by default. Off-by-default extras: ``ema_per_experience`` (the decay
given as the fraction kept over a whole experience, so the pull no longer depends on the number of
steps) and ``align_heads`` (Weight-Aligning the new head's norms to the old ones, which the official
code has no equivalent of).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.models.heads import align_new_class_norms
from clpeft.pet.trunk import SharedTrunk
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option

OFFLINE = "offline"


@register("lae")
class LAE(CLStrategy):
    accepts_pet = ("adapter", "lora", "prefix", "prompt")  # EMA averages their weights; a mask cannot be averaged
    requires_pet = True
    loss_scope = "current"  # old heads get exactly zero gradient
    keeps = ("decay", "gammas")

    @dataclass
    class Options:
        ema_decay: float = option(0.9999, "EMA decay of the offline PET per optimizer step", ge=0.0, lt=1.0)
        pet_warmup_epochs: int | None = option(None, "head-only epochs from experience 1 on (null: 60 % of epochs, "
                                                     "rounded, as the official configs)", ge=0)
        ema_per_experience: float | None = option(None, "extra: fraction of the offline PET kept over a whole "
                                                        "experience (replaces ema_decay)", ge=0.0, lt=1.0)
        align_heads: bool = option(False, "extra: align new head rows' norms to the old ones (WA) after each experience")

    @staticmethod
    def warmup_epochs(options, epochs: int) -> int:
        return round(0.6 * epochs) if options.pet_warmup_epochs is None else options.pet_warmup_epochs

    @classmethod
    def check_config(cls, options, settings) -> None:
        warmup = cls.warmup_epochs(options, settings.epochs)
        if settings.epochs > 0 and warmup >= settings.epochs:
            raise ClpeftError(f"lae with train.epochs={settings.epochs} and a head-only warm-up of {warmup} epoch(s) "
                              "never trains the PET after experience 0 (both experts stay identical); use train.epochs "
                              f"≥ {warmup + 1} (e.g. --epochs {warmup + 1}) or set options.pet_warmup_epochs below "
                              f"{settings.epochs}")

    def setup(self):
        self.pet_warmup_epochs = self.warmup_epochs(self.options, self.settings.epochs)
        self.online = self.pet.active
        self.decay = self.options.ema_decay  # per step; replaced per experience when ema_per_experience is set
        self.shared = SharedTrunk(self.model.backbone, self.pet)
        self.gammas: list[float] = []

    @property
    def has_offline(self) -> bool:
        return OFFLINE in self.pet.names

    # ------------------------------------------------------------------ learning
    def before_experience(self):
        if self.experience_index >= 1 and not self.has_offline:
            self.pet.add(OFFLINE, copy_from=self.online)
            self.freeze(self.pet.parameters(OFFLINE))
        self.n_old = self.model.head.num_seen

    def start_phase(self):
        if self.options.ema_per_experience is not None:
            steps = max(1, self.steps_per_epoch * self.phase.epochs)
            self.decay = self.options.ema_per_experience ** (1.0 / steps)

    def before_epoch(self):
        """Experience ≥ 1: the PET sits out the first ``pet_warmup_epochs`` epochs (grad None, so Adam skips it)."""
        if self.experience_index >= 1:
            frozen = self.epoch < self.pet_warmup_epochs
            for p in self.pet.parameters(self.online):
                p.requires_grad_(not frozen)
                if frozen:
                    p.grad = None

    # ------------------------------------------------------------------ accumulation
    def after_step(self):
        if self.has_offline:
            self.accumulate()

    @torch.no_grad()
    def accumulate(self) -> None:
        online = self.pet.named_parameters(self.online)
        for key, p_off in self.pet.named_parameters(OFFLINE).items():
            p_off.mul_(self.decay).add_(online[key].detach(), alpha=1.0 - self.decay)

    def after_experience(self):
        if self.options.align_heads and self.n_old > 0:
            self.gammas.append(align_new_class_norms(self.model.head, self.n_old))

    # ------------------------------------------------------------------ ensemble
    def predict(self, x: torch.Tensor) -> Prediction:
        with self.autocast():
            h = self.shared.trunk(self.model.adapter(x))
            with self.pet.using(self.online):
                features = self.shared.branch(h)
            online = self.model.head(features)
            if not self.has_offline:  # experience 0: the online expert is the only one
                return Prediction(logits=online, features=features, views={"online": online, "offline": online})
            with self.pet.using(OFFLINE):
                offline = self.model.head(self.shared.branch(h))
        # log of the per-class max of the two softmaxes: argmax is LAE's, softmax() renormalises it
        ensemble = torch.maximum(F.log_softmax(online.float(), dim=-1), F.log_softmax(offline.float(), dim=-1))
        return Prediction(logits=ensemble, features=features, views={"online": online, "offline": offline})
