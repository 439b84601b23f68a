"""First-session adaptation, the step APER, RanPAC and their kin share: on the first experience a PET and a
cosine head (σ·cos, σ learnable, as these papers train) learn with cross-entropy over its classes; afterwards the
PET is frozen and the cosine head is thrown away — later classes are classified from statistics of the adapted
features. A base class for such methods; it names none of them."""
from __future__ import annotations

import torch.nn.functional as F

from clpeft.models.heads import CosineLinear
from clpeft.strategies.base import CLStrategy


class FirstSessionAdaptation(CLStrategy):
    trains_in = "first"
    accepts_pet = ("adapter", "lora", "prefix", "prompt")

    def setup(self):
        self.cosine = CosineLinear(self.model.backbone.num_features, self.model.head.num_classes)
        self.model.extras["first_session_cosine"] = self.cosine

    def phases(self):
        return super().phases() if self.pet is not None else []  # no PET: nothing to adapt

    def trainable_parameters(self):
        if self.pet is None:
            return []
        return list(self.pet.parameters()) + list(self.cosine.parameters())

    def training_logits(self, x):
        with self.autocast():
            return self.cosine(self.model.features(x))[:, :self.current_classes.stop]

    def training_loss(self, logits, y, x):
        return F.cross_entropy(logits.float(), y)

    def freeze_adaptation(self) -> None:
        """Adapted once: from now on the backbone never changes."""
        self.freeze(self.trainable_parameters())

    def after_resume(self, train_stream) -> None:
        if self.experience_index >= 0:
            self.freeze_adaptation()
