"""Prototype classifier on the frozen backbone (SimpleCIL-style): no training at all.

After each experience the head's new rows become the mean L2-normalised feature of each new class
(training images, no augmentation), and classification is by cosine similarity to those prototypes.
Old prototypes never change, so the only forgetting comes from classes that crowd each other in
feature space.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


@register("prototype")
class Prototype(CLStrategy):
    trains = "head"
    trains_in = "none"
    accepts_pet = False

    @dataclass
    class Options:
        temperature: float = option(0.1, "cosine logits are divided by this", gt=0.0)

    def before_experience(self):
        self.model.head.cosine = True
        self.model.head.temperature = self.options.temperature

    @torch.no_grad()
    def after_experience(self):
        """Each new class's head row = its mean normalised feature."""
        start, end = self.current_classes.start, self.current_classes.stop
        features, labels = self.extract_features(self.experience_data)
        features = F.normalize(features, dim=-1)
        sums = torch.zeros(end - start, features.shape[1], device=features.device).index_add_(0, labels - start, features)
        counts = torch.bincount(labels - start, minlength=end - start).clamp_min(1).to(sums.dtype)
        self.model.head.chunks[-1].weight.copy_(sums / counts.unsqueeze(1))
