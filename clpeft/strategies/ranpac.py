"""RanPAC (McDonnell et al., NeurIPS 2023): first-session adaptation, then a random projection of the frozen
features and a ridge-regression head solved in closed form from accumulated statistics.

- **First experience**: the PET and a cosine head train (as APER; the paper's Adapter or SSF), then freeze.
- **Projection**: W_rand ∈ R^{d×M}, entries N(0, 1), drawn once from a generator seeded by the run's seed;
  h = ReLU(f·W_rand) (``projection: 0``: h = f, the "no RP" ablation).
- **Statistics**, every experience, on its training images with test-time transforms: G += HᵀH (M×M) and the
  per-class sums of h (= HᵀY), in float64 (:class:`clpeft.models.class_stats.ClassStatistics`).
- **Head**: W = (G + λI)⁻¹ Q over the classes seen so far, λ re-chosen every experience from 10⁻⁸…10⁸ by the
  MSE on a held-out fifth of *that experience's* training features (never test data); logits = h·W.

Memory: G is M×M float64 — 800 MB at the paper's M = 10,000, kept on the CPU (and in checkpoints); the solve
is one Cholesky per experience, and λ costs one eigendecomposition of the held-out split's kernel instead of
17 M×M solves.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.evaluation.prediction import Prediction
from clpeft.models.class_stats import RIDGE_CANDIDATES, ClassStatistics, choose_ridge_lambda, ridge_solve
from clpeft.models.heads import RidgeHead
from clpeft.strategies.base import register
from clpeft.strategies.first_session import FirstSessionAdaptation
from clpeft.utils.typed import option


@register("ranpac")
class RanPAC(FirstSessionAdaptation):
    """Without a PET the frozen backbone's features feed the projection directly (no phase 1)."""

    keeps = ("stats", "lambdas")

    @dataclass
    class Options:
        projection: int = option(10000, "width M of the random projection (0: ridge on the features themselves)", ge=0)
        fit_fraction: float = option(0.8, "share of an experience's training features the ridge is fitted on when "
                                          "choosing λ (the rest scores it)", gt=0.0, lt=1.0)

    def setup(self):
        super().setup()
        dim = self.model.backbone.num_features
        n = self.model.head.num_classes
        self.ridge = RidgeHead(dim, n, self.options.projection, self.generator(12345))
        self.stats = ClassStatistics(self.options.projection or dim, n, gram=True)
        self.lambdas: list[float] = []
        self.model.extras["ranpac_ridge"] = self.ridge

    def after_experience(self):
        self.freeze_adaptation()
        H, y = self.extract_features(self.experience_data, features=lambda x: self.ridge.expand(self.model.features(x)))
        H, y = H.cpu(), y.cpu()
        self.stats.add(H, y)
        order = torch.randperm(len(y), generator=self.generator(self.experience_index))
        seen = self.current_classes.stop
        lam, _ = choose_ridge_lambda(H[order], y[order], seen, RIDGE_CANDIDATES, self.options.fit_fraction)
        self.lambdas.append(lam)
        W = ridge_solve(self.stats.gram, self.stats.sums[:seen].T, lam)
        with torch.no_grad():
            self.ridge.weight[:, :seen] = W.float().to(self.ridge.weight.device)
            self.ridge.known[:seen] = True

    def predict(self, x: torch.Tensor) -> Prediction:
        with self.autocast():
            features = self.model.features(x)
        return Prediction(logits=self.ridge(features), features=features.float())

    def summary(self) -> dict:
        return {"ridge_lambdas": list(self.lambdas), "projection": self.options.projection}
