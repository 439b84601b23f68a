"""Prototype classifier on the frozen backbone (SimpleCIL-style): no training at all.

After each experience the head's new rows become the mean L2-normalised feature of each new class
(training images, no augmentation; accumulated in float64 by :class:`~clpeft.models.class_stats.ClassStatistics`),
and classification is by cosine similarity to those prototypes. Old prototypes never change, so the only
forgetting comes from classes that crowd each other in feature space.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.models.class_stats import ClassStatistics
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option


@register("prototype")
class Prototype(CLStrategy):
    trains = "head"
    trains_in = "none"
    accepts_pet = False
    keeps = ("stats",)

    @dataclass
    class Options:
        temperature: float = option(0.1, "cosine logits are divided by this", gt=0.0)

    def setup(self):
        self.stats = ClassStatistics(self.model.head.in_features, self.model.head.num_classes)
        # a cosine head from the start, so that a resumed run regrows its chunks as cosine (bias-free) too
        self.model.head.cosine = True
        self.model.head.temperature = self.options.temperature

    @torch.no_grad()
    def after_experience(self):
        """Each new class's head row = its mean normalised feature."""
        features, labels = self.extract_features(self.experience_data)
        self.stats.add(F.normalize(features, dim=-1), labels)
        means = self.stats.means()[self.current_classes.start:self.current_classes.stop]
        chunk = self.model.head.chunks[-1]
        chunk.weight.copy_(means.to(chunk.weight))
