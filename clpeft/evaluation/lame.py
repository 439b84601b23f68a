"""LAME (Boudiaf et al., CVPR 2022): parameter-free test-time correction of a batch's predictions.

For every test batch, the frozen model's probabilities P and L2-normalised head-input features F
give corrected assignments Y minimising Σ_i KL(y_i‖p_i) − λ Σ_ij W_ij y_iᵀy_j (W: affinities of
F) by bound optimisation: y_i ∝ p_i ⊙ exp(λ Σ_j W_ij y_j), iterated to a relative energy change
≤ tol. Y replaces P; no parameter changes and nothing is kept between batches. Defaults are the
official code's benchmark settings (``shared/specs/lame.md``): rbf affinity, k = 5, λ = 1, 100
steps, tolerance 1e-8.

Departures on purpose: a batch of one returns P (the official rbf gives NaN there); σ is floored
so identical features (σ = 0) cannot give NaN.

Two ways in: :func:`with_lame` wraps any ``predict(x) -> Prediction`` (what ``clpeft run --tta
lame`` uses), and :class:`LAMEPlugin` corrects ``mb_output`` inside an Avalanche eval loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from clpeft.errors import ClpeftError
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.utils.typed import dataclass_from_dict

AFFINITIES = ("knn", "rbf", "linear")


@dataclass
class LAMEConfig:
    """``affinity``: knn | rbf | linear; ``knn``: neighbours (kNN graph, and σ of rbf); ``lam``: weight
    of the Laplacian term; ``max_steps`` / ``tol``: bound-optimisation cap and relative energy tolerance;
    ``force_symmetry``: use (W + Wᵀ)/2; ``sigma_floor``: lower bound on rbf's σ."""

    affinity: str = "rbf"
    knn: int = 5
    lam: float = 1.0
    max_steps: int = 100
    tol: float = 1e-8
    force_symmetry: bool = False
    sigma_floor: float = 1e-6

    def __post_init__(self):
        if self.affinity not in AFFINITIES:
            raise ClpeftError(f"unknown LAME affinity {self.affinity!r}; use one of {', '.join(AFFINITIES)}")
        if self.knn < 1 or self.max_steps < 1:
            raise ClpeftError(f"LAME needs knn ≥ 1 and max_steps ≥ 1 (got knn={self.knn}, max_steps={self.max_steps})")
        if not self.lam >= 0 or not self.tol >= 0 or not self.sigma_floor > 0:
            raise ClpeftError("LAME needs lam ≥ 0, tol ≥ 0 and sigma_floor > 0; fix tta_settings")

    @classmethod
    def from_dict(cls, values: dict | None) -> "LAMEConfig":
        return dataclass_from_dict(cls, values or {}, "LAME setting")


def affinity_matrix(features: torch.Tensor, config: LAMEConfig) -> torch.Tensor:
    """W (N×N) from L2-normalised features, as the official kNN / rbf / linear affinities."""
    n = features.shape[0]
    if config.affinity == "linear":
        W = features @ features.T
    else:
        dist = torch.cdist(features, features)
        if config.affinity == "knn":
            k = min(config.knn + 1, n)
            nearest = dist.topk(k, dim=1, largest=False).indices[:, 1:]   # drop the point itself
            W = torch.zeros_like(dist).scatter_(1, nearest, 1.0)
        else:
            k = min(config.knn, n)
            sigma = dist.topk(k, dim=1, largest=False).values[:, -1].mean().clamp_min(config.sigma_floor)
            W = torch.exp(-dist.pow(2) / (2 * sigma ** 2))
    if config.force_symmetry:
        W = (W + W.T) / 2
    return W


@torch.no_grad()
def lame_assignments(probs: torch.Tensor, features: torch.Tensor, config: LAMEConfig | None = None) -> torch.Tensor:
    """Corrected assignments Y (rows on the simplex) for one batch; ``features`` are normalised here."""
    config = config or LAMEConfig()
    probs = probs.float()
    if probs.shape[0] < 2:
        return probs
    W = affinity_matrix(F.normalize(features.float(), dim=-1), config)
    unary = -torch.log(probs + 1e-10)
    Y = F.softmax(-unary, dim=-1)
    previous = None
    for step in range(config.max_steps):
        pairwise = config.lam * (W @ Y)
        Y = F.softmax(-unary + pairwise, dim=-1)
        energy = float((unary * Y - pairwise * Y + Y * torch.log(Y.clamp_min(1e-20))).sum())
        if step > 1 and abs(energy - previous) <= config.tol * abs(previous):
            break
        previous = energy
    return Y


def corrected_logits(logits: torch.Tensor, features: torch.Tensor, num_seen: int, config: LAMEConfig) -> torch.Tensor:
    """log Y over the seen classes, unseen classes kept at ``UNSEEN_LOGIT`` (argmax and CE stay meaningful)."""
    if features is None:
        raise ClpeftError("LAME needs the features feeding the head; this strategy's predict() returns none")
    Y = lame_assignments(F.softmax(logits[:, :num_seen].float(), dim=-1), features, config)
    out = torch.full(logits.shape, UNSEEN_LOGIT, dtype=torch.float32, device=logits.device)
    out[:, :num_seen] = torch.log(Y + 1e-10)
    return out


def with_lame(predict, num_seen, config: LAMEConfig | None = None):
    """Wrap ``predict(x) -> Prediction``; ``num_seen()`` gives the classes with a head right now."""
    from clpeft.strategies.base import Prediction

    config = config or LAMEConfig()

    def predict_with_lame(x: torch.Tensor) -> Prediction:
        out = predict(x)
        return Prediction(logits=corrected_logits(out.logits, out.features, num_seen(), config), features=out.features)

    return predict_with_lame


class LAMEPlugin(SupervisedPlugin):
    """Avalanche plugin: during ``strategy.eval`` replace ``mb_output`` by LAME's corrected logits.

    The head's input is captured with a forward pre-hook, so it works on any model whose classifier
    is ``model.head`` (clpeft's models) or ``model.classifier`` / ``model.linear`` (Avalanche's).
    """

    def __init__(self, config: LAMEConfig | None = None):
        super().__init__()
        self.config = config or LAMEConfig()
        self._features = None
        self._hook = None

    def _head(self, model):
        for name in ("head", "classifier", "linear"):
            if hasattr(model, name):
                return getattr(model, name)
        raise ClpeftError("LAMEPlugin needs the model's classifier as .head, .classifier or .linear")

    def before_eval(self, strategy, **kwargs):
        def grab(module, args):
            self._features = args[0].detach()

        self._hook = self._head(strategy.model).register_forward_pre_hook(grab)

    def after_eval_forward(self, strategy, **kwargs):
        head = self._head(strategy.model)
        seen = getattr(head, "num_seen", strategy.mb_output.shape[1])
        strategy.mb_output = corrected_logits(strategy.mb_output, self._features, seen, self.config)

    def after_eval(self, strategy, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
