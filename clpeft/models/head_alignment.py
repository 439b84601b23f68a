"""Classifier alignment on sampled features: retrain a head on features drawn from per-class distributions instead of
stored exemplars (SLCA's alignment, MOS's and HiDe-Prompt's TAP).

A **sampler** draws ``n`` features per class, in class order; :func:`align_head` trains given parameters on them
with SGD and a cosine schedule, shuffling each epoch's samples and stepping through minibatches. Every random draw
comes from one generator, in a fixed order (per epoch: each class's samples, then the shuffle), so an alignment
seeded the same way gives the same head.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from clpeft.models.class_stats import ClassStatistics


class GaussianSampler:
    """Features from N(scale_c · μ_c, Σ_c + ridge·I) per class, with the class statistics' float64 moments (sampled
    in float64 through the Cholesky factor, returned as float32)."""

    def __init__(self, stats: ClassStatistics, classes: Sequence[int], ridge: float = 1e-4,
                 mean_scale: Callable[[int], float] | None = None):
        self.classes = list(classes)
        self.gaussians = []
        for c in self.classes:
            mean, cov = stats.gaussian(c, ridge)
            scale = 1.0 if mean_scale is None else mean_scale(c)
            self.gaussians.append((mean * scale, torch.linalg.cholesky(cov)))

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([mean + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) @ chol.T
                       for mean, chol in self.gaussians]).float()
        y = torch.tensor(self.classes).repeat_interleave(n)
        return x, y


def align_head(head: Callable[[torch.Tensor], torch.Tensor], params: list, sampler, *, epochs: int, lr: float,
               samples_per_class: int, batch_size: int, generator: torch.Generator, momentum: float = 0.9,
               weight_decay: float = 0.0, logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
               device: torch.device | str = "cpu") -> list[float]:
    """Train ``params`` so that ``head`` classifies sampled features: per epoch ``samples_per_class`` fresh samples
    of every class, shuffled, in minibatches of ``batch_size``; cross-entropy on ``logits(head(x))`` (default: the
    head's output) against the sampled classes; SGD with momentum and weight decay, cosine over ``epochs``.
    Returns each epoch's mean loss."""
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    losses = []
    for _ in range(epochs):
        x, y = sampler.sample(samples_per_class, generator)
        order = torch.randperm(len(y), generator=generator)
        x, y = x[order].to(device), y[order].to(device)
        total, steps = 0.0, math.ceil(len(y) / batch_size)
        for i in range(steps):
            xb, yb = x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]
            out = head(xb)
            loss = F.cross_entropy(logits(out) if logits is not None else out, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        scheduler.step()
        losses.append(total / steps)
    return losses
