"""LAE (Gao et al., ICCV 2023): learning, accumulation and ensemble over any PET module.

- **Learning**: the online PET (the injected instance) and the heads train on the current
  experience with the loss over that experience's classes only; from experience 1 on, the PET is
  frozen for the first ``pet_warmup_epochs`` epochs so the new head warms up alone.
- **Accumulation**: at the start of experience 1 the offline PET is born as a copy of the online
  one; after every optimizer step it moves by EMA: θ_off ← d·θ_off + (1 − d)·θ_on.
- **Ensemble**: prediction = per-class max of the two experts' softmaxes (one shared head); the
  experts share the backbone up to the first PET block, which runs once.

Faithful by default (``shared/specs/lae.md``). Off-by-default extras: ``ema_per_experience``
(the decay given as the fraction kept over a whole experience, so the pull no longer depends on
the number of steps) and ``align_heads`` (Weight-Aligning the new head's norms to the old ones,
which the official code has no equivalent of).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.models.heads import align_new_class_norms
from clpeft.pet.trunk import SharedTrunk
from clpeft.strategies.base import CLStrategy, Prediction, register
from clpeft.utils.device import autocast

OFFLINE = "offline"


@register("lae")
class LAE(CLStrategy):
    trains = "pet"

    def configure(self, ema_decay: float = 0.9999, pet_warmup_epochs: int | None = None,
                  ema_per_experience: float | None = None, align_heads: bool = False, **options):
        """``pet_warmup_epochs``: None = 60 % of the epochs, rounded (3 of 5, 30 of 50, as the official configs)."""
        super().configure(**options)
        if self.pet is None:
            raise ClpeftError("lae needs a PET module; pass --pet adapter, lora, prefix or prompt")
        if self.pet.config.kind == "supermask":
            raise ClpeftError("lae averages PET weights by EMA; supermasks are not supported (use --pet adapter, lora, prefix or prompt)")
        if not 0.0 <= ema_decay < 1.0:
            raise ClpeftError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if ema_per_experience is not None and not 0.0 <= ema_per_experience < 1.0:
            raise ClpeftError(f"ema_per_experience must be in [0, 1) (fraction of the offline PET kept per experience), got {ema_per_experience}")
        if pet_warmup_epochs is not None and pet_warmup_epochs < 0:
            raise ClpeftError(f"pet_warmup_epochs must be ≥ 0, got {pet_warmup_epochs}")
        self.ema_per_experience = ema_per_experience
        self.align_heads = align_heads
        epochs = self.settings.epochs
        self.pet_warmup_epochs = round(0.6 * epochs) if pet_warmup_epochs is None else pet_warmup_epochs
        self.online = self.pet.active
        self.decay = ema_decay  # per step; replaced per experience when ema_per_experience is set
        self._shared: SharedTrunk | None = None
        self.experience_index = -1
        self.gammas: list[float] = []

    def loss_range(self) -> tuple[int, int]:
        """Always the current experience's classes: old heads get exactly zero gradient."""
        classes = self.experience.classes_in_this_experience
        return min(classes), max(classes) + 1

    @property
    def shared(self) -> SharedTrunk:
        if self._shared is None:
            self._shared = SharedTrunk(self.model.backbone, self.pet)
        return self._shared

    @property
    def has_offline(self) -> bool:
        return OFFLINE in self.pet.names

    # ------------------------------------------------------------------ learning
    def _before_training_exp(self, **kwargs):
        self.experience_index += 1
        if self.experience_index >= 1 and not self.has_offline:
            self.pet.add(OFFLINE, copy_from=self.online)
            for p in self.pet.parameters(OFFLINE):
                p.requires_grad_(False)
        self.n_old = self.model.head.num_seen
        super()._before_training_exp(**kwargs)
        if self.ema_per_experience is not None:
            steps = max(1, len(self.dataloader) * self.train_epochs)
            self.decay = self.ema_per_experience ** (1.0 / steps)

    def _before_training_epoch(self, **kwargs):
        """Experience ≥ 1: the PET sits out the first ``pet_warmup_epochs`` epochs (grad None, so Adam skips it)."""
        super()._before_training_epoch(**kwargs)
        if self.experience_index >= 1:
            frozen = self.clock.train_exp_epochs < self.pet_warmup_epochs
            for p in self.pet.parameters(self.online):
                p.requires_grad_(not frozen)
                if frozen:
                    p.grad = None

    # ------------------------------------------------------------------ accumulation
    def _after_update(self, **kwargs):
        super()._after_update(**kwargs)
        if self.has_offline:
            self.accumulate()

    @torch.no_grad()
    def accumulate(self) -> None:
        online = self.pet.named_parameters(self.online)
        for key, p_off in self.pet.named_parameters(OFFLINE).items():
            p_off.mul_(self.decay).add_(online[key].detach(), alpha=1.0 - self.decay)

    def _after_training_exp(self, **kwargs):
        if self.align_heads and self.n_old > 0:
            self.gammas.append(align_new_class_norms(self.model.head, self.n_old))
        super()._after_training_exp(**kwargs)

    # ------------------------------------------------------------------ ensemble
    def predict(self, x: torch.Tensor) -> Prediction:
        with autocast(self._autocast_device, self.amp):
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

    def resume_state(self) -> dict:
        return {**super().resume_state(), "experience_index": self.experience_index, "decay": self.decay,
                "gammas": list(self.gammas)}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        super().load_resume_state(state, model_state, train_stream)
        self.experience_index, self.decay, self.gammas = state["experience_index"], state["decay"], list(state["gammas"])
