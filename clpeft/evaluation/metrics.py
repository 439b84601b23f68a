"""Continual-learning metrics as pure functions of the accuracy matrix, so they can be checked by hand.

Notation: ``R[i][j]`` is the accuracy on the test data of experience ``j`` after training on
experience ``i`` (T×T, i, j from 0). ``n[j]`` is the number of test samples of experience ``j``.
``b[j]`` is the accuracy on experience ``j`` before any training (for FWT).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def _matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1]:
        raise ValueError(f"accuracy matrix must be square T×T, got shape {R.shape}")
    return R


def accuracy_after_each(R, n: Sequence[int] | None = None) -> np.ndarray:
    """a_i: accuracy over the test data of experiences 0..i after training i (sample-weighted by ``n``)."""
    R = _matrix(R)
    w = np.ones(len(R)) if n is None else np.asarray(n, dtype=np.float64)
    return np.array([np.dot(R[i, : i + 1], w[: i + 1]) / w[: i + 1].sum() for i in range(len(R))])


def final_accuracy(R, n=None) -> float:
    """A_T: accuracy over all seen test data after the last experience."""
    return float(accuracy_after_each(R, n)[-1])


def average_incremental_accuracy(R, n=None) -> float:
    """Ā = (1/T) Σ_i a_i (Rebuffi et al., iCaRL)."""
    return float(accuracy_after_each(R, n).mean())


def forgetting_max(R) -> float:
    """Chaudhry et al.: mean over j < T-1 of max_{l<T-1} R[l][j] − R[T-1][j] (0 for one experience)."""
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]))


def forgetting_after_learning(R) -> float:
    """Avalanche's definition: mean over j < T-1 of R[j][j] − R[T-1][j] (accuracy just after learning j minus last)."""
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[j, j] - R[T - 1, j] for j in range(T - 1)]))


def per_experience_forgetting(R, definition: str = "max") -> np.ndarray:
    """f_j for every j < T-1 under ``definition`` ('max' or 'after_learning')."""
    R = _matrix(R)
    T = len(R)
    if definition == "max":
        return np.array([R[j : T - 1, j].max() - R[T - 1, j] for j in range(T - 1)])
    if definition == "after_learning":
        return np.array([R[j, j] - R[T - 1, j] for j in range(T - 1)])
    raise ValueError(f"unknown forgetting definition {definition!r}")


def backward_transfer(R) -> float:
    """Lopez-Paz & Ranzato: (1/(T−1)) Σ_{j<T-1} R[T-1][j] − R[j][j] (= −forgetting_after_learning)."""
    R = _matrix(R)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def forward_transfer(R, b) -> float:
    """Lopez-Paz & Ranzato: (1/(T−1)) Σ_{j≥1} R[j-1][j] − b[j].

    In class-incremental learning with heads that grow per experience, a model cannot predict a
    class before it has a head for it, so R[j-1][j] = b[j] = 0 and FWT is 0 by construction; it
    is informative in the task-incremental view or with zero-shot heads.
    """
    R = _matrix(R)
    b = np.asarray(b, dtype=np.float64)
    T = len(R)
    if T < 2:
        return 0.0
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, T)]))


@dataclass
class Summary:
    final_accuracy: float
    average_incremental_accuracy: float
    forgetting_max: float
    forgetting_after_learning: float
    backward_transfer: float
    forward_transfer: float
    accuracy_after_each: list

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(R, n=None, b=None) -> Summary:
    T = len(_matrix(R))
    return Summary(
        final_accuracy=final_accuracy(R, n),
        average_incremental_accuracy=average_incremental_accuracy(R, n),
        forgetting_max=forgetting_max(R),
        forgetting_after_learning=forgetting_after_learning(R),
        backward_transfer=backward_transfer(R),
        forward_transfer=forward_transfer(R, b if b is not None else np.zeros(T)),
        accuracy_after_each=[float(a) for a in accuracy_after_each(R, n)],
    )


def running_metrics(rows, n: Sequence[int] | None = None) -> dict:
    """After experience i (``rows`` = R[0..i], each over every test experience): accuracy on the seen
    experiences, Ā so far, and forgetting (max − last) of the experiences before i — what a live log shows."""
    R = np.asarray(rows, dtype=np.float64)
    i = len(R) - 1
    w = np.ones(R.shape[1]) if n is None else np.asarray(n, dtype=np.float64)
    seen = [float(np.dot(R[k, : k + 1], w[: k + 1]) / w[: k + 1].sum()) for k in range(i + 1)]
    forgetting = float(np.mean([R[:i, j].max() - R[i, j] for j in range(i)])) if i > 0 else 0.0
    return {"accuracy_seen": seen[-1], "average_incremental_accuracy": float(np.mean(seen)), "forgetting_max": forgetting}
