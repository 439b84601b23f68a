"""Prototype classifier on the frozen backbone (SimpleCIL-style): no training at all.

After each experience the head's new rows become the mean feature of each new class, and
classification is by cosine similarity to those prototypes. Old prototypes never change, so the
only forgetting comes from classes that crowd each other in feature space.
"""
import torch

from clpeft.strategies.base import CLStrategy, register


@register("prototype")
class Prototype(CLStrategy):
    trains = "head"
    accepts_pet = False

    def configure(self, temperature: float = 0.1, **options):
        super().configure(**options)
        self.temperature = temperature

    def _before_training_exp(self, **kwargs):
        self.model.head.cosine = True
        self.model.head.temperature = self.temperature
        super()._before_training_exp(**kwargs)

    @torch.no_grad()
    def _train_exp(self, experience, eval_streams=None, **kwargs):
        """Replace the epochs by one feature pass: each new class's head row = its mean feature."""
        self.model.eval()
        start, end = min(experience.classes_in_this_experience), max(experience.classes_in_this_experience) + 1
        dim = self.model.head.in_features
        sums = torch.zeros(end - start, dim, device=self.device)
        counts = torch.zeros(end - start, device=self.device)
        for batch in self.dataloader:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            feats = torch.nn.functional.normalize(self.model.features(x).float(), dim=-1)
            sums.index_add_(0, y - start, feats)
            counts.index_add_(0, y - start, torch.ones_like(y, dtype=counts.dtype))
        chunk = self.model.head.chunks[-1]
        chunk.weight.copy_(sums / counts.clamp_min(1).unsqueeze(1))
