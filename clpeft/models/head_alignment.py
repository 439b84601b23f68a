"""Classifier alignment on sampled features: retrain a head on features drawn from per-class distributions instead of
stored exemplars (SLCA's alignment, MOS's and HiDe-Prompt's TAP).

A **sampler** draws ``n`` features per class (per centroid), in class order: :class:`GaussianSampler` from each
class's mean and full covariance (:class:`~clpeft.models.class_stats.ClassStatistics`), :class:`CentroidSampler`
from :class:`ClassCentroids` — k-means centroids of each class with their diagonal variances, D·k numbers per class
instead of D². :func:`align_head` trains given parameters on the samples with SGD and a cosine schedule, shuffling
each epoch's samples and stepping through minibatches. Every random draw comes from one generator, in a fixed order
(per epoch: each class's samples, then the shuffle), so an alignment seeded the same way gives the same head.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
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


class ClassCentroids:
    """Per class, ``k`` k-means centroids of its features and the diagonal variance of each cluster (float64), fitted
    once when the class is learned (k-means seeded: the same features give the same centroids)."""

    def __init__(self, dim: int, num_classes: int, k: int = 10):
        self.dim, self.num_classes, self.k = dim, num_classes, k
        self.means = torch.zeros(num_classes, k, dim, dtype=torch.float64)
        self.vars = torch.zeros(num_classes, k, dim, dtype=torch.float64)
        self.fitted = torch.zeros(num_classes, dtype=torch.bool)

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        from sklearn.cluster import KMeans

        h, y = features.detach().cpu().double(), labels.detach().cpu()
        for c in y.unique().tolist():
            rows = h[y == c]
            if len(rows) < self.k:
                raise ClpeftError(f"class {c} has {len(rows)} training samples, fewer than the {self.k} centroids asked "
                                  f"for; lower the method's centroids option (e.g. --option centroids={len(rows)})")
            assign = torch.as_tensor(KMeans(n_clusters=self.k, n_init=10, random_state=seed + c)
                                     .fit(rows.numpy()).labels_)
            for j in range(self.k):
                part = rows[assign == j]
                self.means[c, j] = part.mean(0)
                self.vars[c, j] = part.var(0, unbiased=False)
            self.fitted[c] = True

    def centroids(self, classes: Sequence[int] | None = None) -> torch.Tensor:
        """[n·k, D] the centroids of ``classes`` (default: every fitted class), class by class."""
        classes = torch.nonzero(self.fitted).flatten().tolist() if classes is None else list(classes)
        return self.means[classes].reshape(-1, self.dim)

    def state_dict(self) -> dict:
        return {"means": self.means, "vars": self.vars, "fitted": self.fitted}

    def load_state_dict(self, state: dict) -> None:
        self.means, self.vars, self.fitted = state["means"].double(), state["vars"].double(), state["fitted"].bool()


class CentroidSampler:
    """Features from N(μ_cj, diag(σ²_cj) + ridge·I) for every centroid j of every class c, ``n`` per centroid;
    clusters whose variance is 0 everywhere (a single sample) are skipped, as HiDe-Prompt's code skips them."""

    def __init__(self, centroids: ClassCentroids, classes: Sequence[int], ridge: float = 1e-4):
        self.parts = [(c, centroids.means[c, j], (centroids.vars[c, j] + ridge).sqrt())
                      for c in classes for j in range(centroids.k) if centroids.vars[c, j].mean() > 0]

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([mean + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) * std
                       for _, mean, std in self.parts]).float()
        y = torch.tensor([c for c, _, _ in self.parts]).repeat_interleave(n)
        return x, y


@contextmanager
def _trainable(params: list):
    """``params`` take gradients inside the block; each gets its own ``requires_grad`` back after it."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def align_head(head: Callable[[torch.Tensor], torch.Tensor], params: list, sampler, *, epochs: int, lr: float,
               samples_per_class: int, batch_size: int, generator: torch.Generator, momentum: float = 0.9,
               weight_decay: float = 0.0, logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
               device: torch.device | str = "cpu", steps: int | None = None) -> list[float]:
    """Train ``params`` so that ``head`` classifies sampled features: per epoch ``samples_per_class`` fresh samples
    of every class, shuffled, in minibatches of ``batch_size``; cross-entropy on ``logits(head(x))`` (default: the
    head's output) against the sampled classes; SGD with momentum and weight decay, cosine over ``epochs``.
    ``steps``: minibatches per epoch (default: all; fewer leaves the rest of the shuffled samples unused, as
    HiDe-Prompt's code steps once per earlier class). ``params`` train whatever their ``requires_grad``; each
    keeps its flag afterwards. Returns each epoch's mean loss."""
    with _trainable(params):
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        losses = []
        for _ in range(epochs):
            x, y = sampler.sample(samples_per_class, generator)
            order = torch.randperm(len(y), generator=generator)
            x, y = x[order].to(device), y[order].to(device)
            total, n_steps = 0.0, math.ceil(len(y) / batch_size)
            n_steps = min(n_steps, steps) if steps is not None else n_steps
            for i in range(n_steps):
                xb, yb = x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]
                out = head(xb)
                loss = F.cross_entropy(logits(out) if logits is not None else out, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            scheduler.step()
            losses.append(total / max(n_steps, 1))
        return losses
