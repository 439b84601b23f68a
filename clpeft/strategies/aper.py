"""APER (Zhou et al., "Revisiting class-incremental learning with pre-trained models", IJCV 2024) with any PET:
adapt the backbone on the first experience only, then classify every class by prototypes of the features of
the pretrained and the adapted backbone side by side.

- **First experience**: the PET and a cosine head (σ·cos, σ learnable) train with cross-entropy over the
  experience's classes (the paper's Adapter: ``--pet adapter`` with AdaptFormer's placement, see the
  ``aper_*`` scenarios). Afterwards nothing trains: the cosine head is thrown away, the PET frozen.
- **Every experience**: each new class's prototype is the mean of the *raw* features
  [f_pretrained(x) ‖ f_adapted(x)] of its training images (test-time transforms, eval mode); a sample's logit
  for class c is cos(its feature, prototype c). Prototypes of old classes never change.

``concat: false`` uses the adapted features alone (the paper's ablation); ``pet none`` is SimpleCIL on
un-normalised means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.evaluation.prediction import Prediction
from clpeft.models.class_stats import ClassStatistics
from clpeft.models.heads import PrototypeHead
from clpeft.strategies.base import register
from clpeft.strategies.first_session import FirstSessionAdaptation
from clpeft.utils.typed import option


@register("aper")
class APER(FirstSessionAdaptation):
    requires_pet = True
    keeps = ("stats",)

    @dataclass
    class Options:
        concat: bool = option(True, "prototypes over [pretrained ‖ adapted] features (false: adapted only)")

    def setup(self):
        super().setup()
        dim = self.model.backbone.num_features
        width = 2 * dim if self.options.concat else dim
        self.prototypes = PrototypeHead(width, self.model.head.num_classes)
        self.stats = ClassStatistics(width, self.model.head.num_classes)
        self.model.extras["aper_prototypes"] = self.prototypes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        adapted = self.model.features(x).float()
        return torch.cat([self.frozen_features(x), adapted], dim=1) if self.options.concat else adapted

    def after_experience(self):
        self.freeze_adaptation()
        feats, labels = self.extract_features(self.experience_data, features=self.features)
        self.stats.add(feats, labels)
        new = torch.tensor(list(self.current_classes))
        self.prototypes.set(new, self.stats.means()[new].float())

    def predict(self, x: torch.Tensor) -> Prediction:
        with self.autocast():
            features = self.features(x)
        return Prediction(logits=self.prototypes(features), features=features)
