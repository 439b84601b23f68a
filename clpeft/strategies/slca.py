"""SLCA (Zhang et al., ICCV 2023): a Slow Learner and Classifier Alignment.

- **Slow learner**: every experience fine-tunes the backbone (or its PET) with a learning rate
  ``backbone_lr_scale`` × that of the head (0.01 by default), with the cross-entropy over the current
  experience's classes; each experience gets its own head chunk and earlier chunks are frozen (SGD's weight
  decay cannot shrink them).
- **Class statistics**: after training, each new class's mean and covariance (+ ``covariance_ridge``·I) of its
  training features (test-time transforms, eval mode), in float64; never recomputed later (they go stale as the
  backbone drifts, as in the paper).
- **Classifier alignment** (experience ≥ 1): every head chunk trains for ``ca_epochs`` on features sampled from
  the class Gaussians, ``ca_samples`` per class per epoch with class c's mean scaled by 0.9 + 0.1·(t_c + 1)/(T + 1)
  (older classes' means shrink a little); logits divided by the mean over experiences of each experience's logit
  norm and by ``ca_tau`` (logit normalisation); SGD, cosine schedule. The aligned head is evaluated; the next
  experience trains from the head as it was before alignment (the paper's backup/recall).

Sampling uses a generator seeded by the run's seed and the experience, so runs and resumes are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.models.class_stats import ClassStatistics
from clpeft.models.head_alignment import GaussianSampler, align_head
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import check_milestones, option


@register("slca")
class SLCA(CLStrategy):
    loss_scope = "current"
    keeps = ("stats", "class_experience", "unaligned")

    @dataclass
    class Options:
        backbone_lr_scale: float = option(0.01, "backbone (or PET) learning rate as a fraction of train.lr", ge=0.0)
        milestones: list[int] | None = option(None, "MultiStepLR epochs of the slow learner (paper: 18 of 20)")
        lr_decay: float = option(0.1, "MultiStepLR factor", gt=0.0)
        ca_epochs: int = option(5, "epochs of classifier alignment (0: none)", ge=0)
        ca_lr: float = option(0.01, "learning rate of classifier alignment", gt=0.0)
        ca_samples: int = option(256, "features sampled per class and epoch", ge=1)
        ca_tau: float | None = option(0.1, "logit-normalisation temperature (null: plain logits)", gt=0.0)
        ca_weight_decay: float = option(5e-4, "weight decay of classifier alignment", ge=0.0)
        covariance_ridge: float = option(1e-4, "added to each class covariance's diagonal", gt=0.0)

    @classmethod
    def check_config(cls, options, settings) -> None:
        check_milestones(options.milestones, "options.milestones of slca")

    def setup(self):
        dim = self.model.backbone.num_features
        self.stats = ClassStatistics(dim, self.model.head.num_classes, class_second_moments=True)
        self.class_experience: dict[int, int] = {}
        self.unaligned = None  # the head before the last alignment: the next experience trains from it

    # ------------------------------------------------------------------ slow learner
    def before_experience(self):
        if self.unaligned is not None:
            with torch.no_grad():
                for chunk, state in zip(self.model.head.chunks, self.unaligned):
                    for name, value in state.items():
                        getattr(chunk, name).copy_(value)
            self.unaligned = None

    def trainable_parameters(self):
        body = list(self.pet.parameters()) if self.pet is not None else list(self.model.backbone.parameters())
        head = self.current_head_parameters()
        return body + head

    def optimizer_groups(self, params):
        body, head = self.split_head(params)
        lr = self.settings.lr
        return [{"params": body, "lr": lr * self.options.backbone_lr_scale}, {"params": head, "lr": lr}]

    def make_scheduler(self, optimizer, phase):
        if self.options.milestones:
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, self.options.milestones, gamma=self.options.lr_decay)
        return super().make_scheduler(optimizer, phase)

    # ------------------------------------------------------------------ statistics and alignment
    def after_experience(self):
        features, labels = self.extract_features(self.experience_data)
        self.stats.add(features, labels)
        for c in self.current_classes:
            self.class_experience[c] = self.experience_index
        if self.experience_index >= 1 and self.options.ca_epochs > 0:
            self.unaligned = [{k: v.detach().clone() for k, v in chunk.state_dict().items()} for chunk in self.model.head.chunks]
            self.align()

    def align(self) -> None:
        """Classifier alignment (the shared :func:`align_head`): every head chunk on samples of the class Gaussians,
        older classes' means shrunk a little, logits normalised per experience."""
        o, T, seen = self.options, self.experience_index, self.model.head.num_seen
        sampler = GaussianSampler(self.stats, range(seen), o.covariance_ridge,
                                  mean_scale=lambda c: 0.9 + 0.1 * (self.class_experience[c] + 1) / (T + 1))
        bounds = [0] + [r.stop for r in self._experience_ranges()]

        def normalised(logits: torch.Tensor) -> torch.Tensor:
            logits = logits[:, :seen]
            if o.ca_tau is None:
                return logits
            norms = torch.stack([logits[:, a:b].norm(dim=-1) + 1e-7 for a, b in zip(bounds[:-1], bounds[1:])], 1)
            return logits / norms.mean(1, keepdim=True) / o.ca_tau

        params = list(self.model.head.parameters())
        with self.eval_mode():
            align_head(self.model.head, params, sampler, epochs=o.ca_epochs, lr=o.ca_lr, samples_per_class=o.ca_samples,
                       batch_size=o.ca_samples, generator=self.generator(500 + T), weight_decay=o.ca_weight_decay,
                       logits=normalised, device=self.device)
        self.freeze(params)

    def _experience_ranges(self) -> list[range]:
        starts, ranges = 0, []
        for chunk in self.model.head.chunks:
            ranges.append(range(starts, starts + chunk.out_features))
            starts += chunk.out_features
        return ranges

    # ------------------------------------------------------------------ records and resume
