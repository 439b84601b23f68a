"""Class statistics of features, accumulated in float64, and the closed-form heads built from them.

:class:`ClassStatistics` keeps, per class, the count and the sum of features (→ means, prototypes), optionally
the per-class second moments (→ covariances, Gaussian class models) and a global Gram matrix Σ h hᵀ
(→ ridge regression). Statistics are sums, so experiences add up and torchrun ranks merge by an all-reduce
(:meth:`all_reduce`): the result equals one pass over all the data, whatever the split.

Heads:

- :func:`cosine_prototypes` — each class's mean, compared by cosine (SimpleCIL, APER);
- :func:`ridge_solve` — W = (G + λI)⁻¹ Q in float64 by Cholesky, Q the per-class feature sums (RanPAC);
  :func:`choose_ridge_lambda` picks λ on a held-out part of the *training* features of one experience,
  through one eigendecomposition of their kernel (every candidate λ then costs a matrix product);
- :meth:`ClassStatistics.gaussian` — mean and covariance + εI of a class, for sampling (SLCA).
"""
from __future__ import annotations

import torch

from clpeft.errors import ClpeftError

RIDGE_CANDIDATES = tuple(10.0 ** k for k in range(-8, 9))  # RanPAC's 10^-8 … 10^8


class ClassStatistics:
    """Sums over the features seen so far: per class n_c and Σh; optionally per class Σhhᵀ; optionally Σhhᵀ."""

    def __init__(self, dim: int, num_classes: int, class_second_moments: bool = False, gram: bool = False):
        self.dim, self.num_classes = dim, num_classes
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.sums = torch.zeros(num_classes, dim, dtype=torch.float64)
        self.second = torch.zeros(num_classes, dim, dim, dtype=torch.float64) if class_second_moments else None
        self.gram = torch.zeros(dim, dim, dtype=torch.float64) if gram else None

    @torch.no_grad()
    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        h = features.detach().to("cpu", torch.float64)
        y = labels.detach().to("cpu", torch.long)
        if h.shape[1] != self.dim:
            raise ClpeftError(f"class statistics of width {self.dim} got features of width {h.shape[1]}")
        self.counts.index_add_(0, y, torch.ones(len(y), dtype=torch.float64))
        self.sums.index_add_(0, y, h)
        if self.second is not None:
            self.second.index_add_(0, y, torch.einsum("nd,ne->nde", h, h))
        if self.gram is not None:
            self.gram += h.T @ h

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.counts, self.sums, self.second, self.gram) if t is not None]

    def merge(self, other: "ClassStatistics") -> None:
        for mine, theirs in zip(self.tensors(), other.tensors()):
            mine += theirs

    def all_reduce(self) -> None:
        """Sum the statistics of every torchrun rank (each saw its own slice of the data)."""
        from clpeft import distributed

        if distributed.world_size() == 1:
            return
        import torch.distributed as dist

        backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        for t in self.tensors():
            moved = t.to(backend_device)
            dist.all_reduce(moved)
            t.copy_(moved.cpu())

    def seen(self) -> torch.Tensor:
        return torch.nonzero(self.counts > 0).flatten()

    def means(self) -> torch.Tensor:
        """[C, D] class means (0 for classes not seen)."""
        return self.sums / self.counts.clamp_min(1).unsqueeze(1)

    def gaussian(self, c: int, ridge: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, covariance + ridge·I) of class c; the unbiased covariance (n − 1), as ``torch.cov``."""
        if self.second is None:
            raise ClpeftError("these class statistics keep no second moments; create them with class_second_moments=True")
        n = self.counts[c]
        if n < 2:
            raise ClpeftError(f"class {c} has {int(n)} sample(s); a covariance needs at least 2")
        mean = self.sums[c] / n
        cov = (self.second[c] - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov + ridge * torch.eye(self.dim, dtype=torch.float64)

    def state_dict(self) -> dict:
        return {"counts": self.counts, "sums": self.sums, "second": self.second, "gram": self.gram}

    def load_state_dict(self, state: dict) -> None:
        self.counts, self.sums = state["counts"].double(), state["sums"].double()
        self.second = None if state["second"] is None else state["second"].double()
        self.gram = None if state["gram"] is None else state["gram"].double()


def cosine_prototypes(means: torch.Tensor) -> torch.Tensor:
    """Rows normalised: a cosine classifier's weights (cos(f, μ_c) = normalise(f) · normalise(μ_c))."""
    return torch.nn.functional.normalize(means, dim=1)


def ridge_solve(gram: torch.Tensor, targets: torch.Tensor, lam: float) -> torch.Tensor:
    """W [D, C] = (G + λI)⁻¹ Q in float64 (Cholesky: G + λI is symmetric positive definite)."""
    G = gram.double() + lam * torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    chol, info = torch.linalg.cholesky_ex(G)
    if int(info) == 0:
        return torch.cholesky_solve(targets.double(), chol)
    return torch.linalg.solve(G, targets.double())  # numerically semi-definite at tiny λ: LU instead


def choose_ridge_lambda(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        candidates=RIDGE_CANDIDATES, fit_fraction: float = 0.8) -> tuple[float, list[float]]:
    """λ minimising the mean squared error to one-hot targets on the last (1 − fit_fraction) of the rows, the
    ridge fitted on the first rows (RanPAC's rule; pass the rows in a seeded random order). Training data only.

    Solved in the dual: with K = H_fit H_fitᵀ = U Λ Uᵀ, the fitted predictions of the held-out rows are
    H_val H_fitᵀ U diag(1/(Λ + λ)) Uᵀ Y_fit — one eigendecomposition for every candidate. Returns (λ, MSE per λ)."""
    H = features.double()
    Y = torch.nn.functional.one_hot(labels.long(), num_classes).double()
    n_fit = int(fit_fraction * len(H))
    if n_fit < 1 or n_fit >= len(H):
        raise ClpeftError(f"{len(H)} training samples are too few to choose the ridge λ on a held-out part")
    Hf, Hv, Yf, Yv = H[:n_fit], H[n_fit:], Y[:n_fit], Y[n_fit:]
    evals, U = torch.linalg.eigh(Hf @ Hf.T)
    evals = evals.clamp_min(0)
    cross = (Hv @ Hf.T) @ U            # [n_val, n_fit]
    projected = U.T @ Yf               # [n_fit, C]
    errors = []
    for lam in candidates:
        pred = cross @ (projected / (evals + lam).unsqueeze(1))
        errors.append(float(((pred - Yv) ** 2).mean()))
    best = min(range(len(candidates)), key=errors.__getitem__)
    return float(candidates[best]), errors
