"""The class-statistics accumulator and its closed-form heads, checked against direct computations."""
import numpy as np
import pytest
import torch

from clpeft.errors import ClpeftError
from clpeft.models.class_stats import ClassStatistics, choose_ridge_lambda, cosine_prototypes, ridge_solve


def data(n=120, d=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, d, generator=g) + y[:, None].float()
    return x, y


def test_statistics_split_over_experiences_and_ranks_equal_one_pass():
    x, y = data()
    whole = ClassStatistics(6, 5, class_second_moments=True, gram=True)
    whole.add(x, y)
    parts = [ClassStatistics(6, 5, class_second_moments=True, gram=True) for _ in range(3)]
    for i, part in enumerate(parts):  # e.g. three ranks, each with a strided slice, or three experiences
        part.add(x[i::3], y[i::3])
    merged = parts[0]
    merged.merge(parts[1])
    merged.merge(parts[2])
    for a, b in zip(whole.tensors(), merged.tensors()):
        assert torch.allclose(a, b, atol=1e-10)
    for c in range(5):
        rows = x[y == c].double()
        assert whole.counts[c] == len(rows)
        assert torch.allclose(whole.means()[c], rows.mean(0), atol=1e-12)
        mean, cov = whole.gaussian(c, ridge=1e-4)
        assert torch.allclose(cov, torch.cov(rows.T) + 1e-4 * torch.eye(6, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(whole.gram, x.double().T @ x.double(), atol=1e-10)
    assert torch.allclose(cosine_prototypes(whole.means()).norm(dim=1), torch.ones(5, dtype=torch.float64))


def test_a_class_with_one_sample_has_no_covariance():
    stats = ClassStatistics(3, 2, class_second_moments=True)
    stats.add(torch.randn(3, 3), torch.tensor([0, 0, 1]))
    stats.gaussian(0)
    with pytest.raises(ClpeftError, match="class 1 has 1 sample"):
        stats.gaussian(1)


@pytest.mark.parametrize("lam", [1e-6, 0.1, 10.0])
def test_ridge_head_equals_least_squares_on_the_stacked_system(lam):
    x, y = data(n=80, d=7, classes=4)
    stats = ClassStatistics(7, 4, gram=True)
    stats.add(x, y)
    W = ridge_solve(stats.gram, stats.sums.T, lam)  # Q = Hᵀ Y: the class sums
    H, Y = x.double().numpy(), np.eye(4)[y.numpy()]
    A = np.vstack([H, np.sqrt(lam) * np.eye(7)])
    B = np.vstack([Y, np.zeros((7, 4))])
    expected = np.linalg.lstsq(A, B, rcond=None)[0]
    assert np.allclose(W.numpy(), expected, atol=1e-8)


def test_lambda_chosen_in_the_dual_equals_a_primal_solve_per_candidate():
    x, y = data(n=60, d=9, classes=3)
    lam, errors = choose_ridge_lambda(x, y, 3, candidates=(1e-3, 1.0, 1e3), fit_fraction=0.8)
    H, Y = x.double(), torch.nn.functional.one_hot(y, 3).double()
    primal = []
    for cand in (1e-3, 1.0, 1e3):
        W = torch.linalg.solve(H[:48].T @ H[:48] + cand * torch.eye(9, dtype=torch.float64), H[:48].T @ Y[:48])
        primal.append(float(((H[48:] @ W - Y[48:]) ** 2).mean()))
    assert np.allclose(errors, primal, rtol=1e-6)
    assert lam == (1e-3, 1.0, 1e3)[int(np.argmin(primal))]
    with pytest.raises(ClpeftError, match="too few"):
        choose_ridge_lambda(x[:1], y[:1], 3)
