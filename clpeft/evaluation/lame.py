"""LAME (Boudiaf et al., CVPR 2022): parameter-free test-time correction of a batch's predictions.

For every test batch, the frozen model's probabilities P and L2-normalised head-input features F
give corrected assignments Y minimising Σ_i KL(y_i‖p_i) − λ Σ_ij W_ij y_iᵀy_j (W: affinities of
F) by bound optimisation: y_i ∝ p_i ⊙ exp(λ Σ_j W_ij y_j), iterated to a relative energy change
≤ tol. Y replaces P; no parameter changes and nothing is kept between batches. Defaults are the
official code's benchmark settings: rbf affinity, k = 5, λ = 1, 100
steps, tolerance 1e-8.

Departures on purpose: a batch of one returns P (the official rbf gives NaN there); σ is floored
so identical features (σ = 0) cannot give NaN.

Two ways in: :func:`with_lame` wraps any ``predict(x) -> Prediction`` (what ``clpeft run --tta
lame`` uses), and :class:`LAMEPlugin` corrects ``mb_output`` inside an Avalanche eval loop.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin

from clpeft.catalog import TTA as CATALOG_TTA
from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.evaluation.tta import TTAMethod, register_tta
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.utils.typed import Settings, dataclass_from_dict, option

AFFINITIES = ("knn", "rbf", "linear")


@dataclass
class LAMEConfig(Settings):
    """``affinity``: knn | rbf | linear; ``knn``: neighbours (kNN graph, and σ of rbf); ``lam``: weight
    of the Laplacian term; ``batch_size``: test samples corrected together; ``max_steps`` / ``tol``:
    bound-optimisation cap and relative energy tolerance; ``force_symmetry``: use (W + Wᵀ)/2;
    ``sigma_floor``: lower bound on rbf's σ."""

    affinity: str = option("knn", "affinity between a batch's features (official benchmark default: rbf)",
                           choices=AFFINITIES)
    knn: int = option(1, "neighbours (kNN graph, and σ of rbf; official benchmark default: 5)", ge=1)
    batch_size: int = option(16, "test samples LAME corrects together (official: 16); each evaluation batch is "
                                 "split into consecutive groups of this size", ge=2)
    lam: float = option(1.0, "weight of the Laplacian term", ge=0.0)
    max_steps: int = option(100, "bound-optimisation steps at most", ge=1)
    tol: float = option(1e-8, "relative energy tolerance", ge=0.0)
    force_symmetry: bool = option(False, "use (W + Wᵀ)/2")
    sigma_floor: float = option(1e-6, "lower bound on rbf's σ", gt=0.0)

    section = "tta.lame"

    def __post_init__(self):
        super().__post_init__()
        if self.affinity == "rbf" and self.knn < 2:
            raise ClpeftError("tta.lame.knn must be ≥ 2 with the rbf affinity: its σ is the distance to the k-th nearest "
                              "point counting the point itself, so knn=1 gives σ = 0 and LAME would change nothing")

    @classmethod
    def from_dict(cls, values: dict | None) -> "LAMEConfig":
        return dataclass_from_dict(cls, values or {}, "LAME setting", "tta.lame")


def affinity_matrix(features: torch.Tensor, config: LAMEConfig) -> torch.Tensor:
    """W (N×N) from L2-normalised features, as the official kNN / rbf / linear affinities."""
    n = features.shape[0]
    if config.affinity == "linear":
        W = features @ features.T
    else:
        # the direct differences, as the official code: cdist's matrix-product shortcut rounds distances
        # (a non-zero diagonal), which 100 steps of the update amplify
        dist = torch.cdist(features, features, compute_mode="donot_use_mm_for_euclid_dist")
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
    """log Y over the seen classes, unseen classes kept at ``UNSEEN_LOGIT`` (argmax and CE stay meaningful).
    The rows are corrected in consecutive groups of ``config.batch_size`` (the online batches LAME sees)."""
    if features is None:
        raise ClpeftError("LAME needs the features feeding the head; this strategy's predict() returns none")
    probs = F.softmax(logits[:, :num_seen].float(), dim=-1)
    n = config.batch_size
    Y = torch.cat([lame_assignments(probs[i:i + n], features[i:i + n], config) for i in range(0, len(probs), n)])
    out = torch.full(logits.shape, UNSEEN_LOGIT, dtype=torch.float32, device=logits.device)
    out[:, :num_seen] = torch.log(Y + 1e-10)
    return out


def with_lame(predict, num_seen, config: LAMEConfig | None = None):
    """Wrap ``predict(x) -> Prediction``; ``num_seen()`` gives the classes with a head right now."""
    config = config or LAMEConfig()

    def predict_with_lame(x: torch.Tensor) -> Prediction:
        out = predict(x)
        return Prediction(logits=corrected_logits(out.logits, out.features, num_seen(), config), features=out.features)

    return predict_with_lame


OFFICIAL_BENCHMARK = {"affinity": "rbf", "knn": 5}  # fiveai/LAME's --mode benchmark settings


def variants(config: LAMEConfig) -> list[tuple[str, LAMEConfig]]:
    """Settings worth scoring beside the configured one on the same model and batches: the official benchmark
    default (rbf, k = 5) and the other affinities (k = 5 where one needs k ≥ 2): the affinity and k decide whether
    LAME hurts on i.i.d. batches."""
    out = []
    if {"affinity": config.affinity, "knn": config.knn} != OFFICIAL_BENCHMARK:
        out.append(("official", replace(config, **OFFICIAL_BENCHMARK)))
    for a in AFFINITIES:
        if a != config.affinity and a != OFFICIAL_BENCHMARK["affinity"]:
            out.append((f"affinity={a}", replace(config, affinity=a)))
    return out


register_tta(TTAMethod("lame", LAMEConfig, with_lame, variants, CATALOG_TTA["lame"]))


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
