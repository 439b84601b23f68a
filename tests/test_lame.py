"""LAME: the update against a direct computation, the edge cases, and the plugin paths."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.evaluation.lame import LAMEConfig, LAMEPlugin, affinity_matrix, corrected_logits, lame_assignments
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.run import run


def direct_lame(P, Fn, W, lam, steps):
    """Textbook bound optimisation, one point and one class at a time: y_ik ∝ p_ik · exp(λ Σ_j W_ij y_jk)."""
    N, K = P.shape
    Y = P / P.sum(1, keepdims=True)
    for _ in range(steps):
        new = np.zeros_like(Y)
        for i in range(N):
            for k in range(K):
                new[i, k] = (P[i, k] + 1e-10) * math.exp(lam * sum(W[i, j] * Y[j, k] for j in range(N)))
            new[i] /= new[i].sum()
        Y = new
    return Y


@pytest.mark.parametrize("affinity", ["knn", "rbf", "linear"])
def test_update_matches_a_direct_computation(affinity):
    g = torch.Generator().manual_seed(0)
    P = F.softmax(torch.randn(7, 3, generator=g), dim=1).double()
    feats = torch.randn(7, 5, generator=g).double()
    cfg = LAMEConfig(affinity=affinity, knn=3, lam=0.7, max_steps=6, tol=0.0)
    Fn = F.normalize(feats, dim=-1)
    W = affinity_matrix(Fn.float(), cfg).double().numpy()
    expected = direct_lame(P.numpy(), Fn.numpy(), W, 0.7, 6)
    got = lame_assignments(P, feats, cfg).double().numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_affinities_follow_the_official_definitions():
    feats = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]]), dim=-1)
    W = affinity_matrix(feats, LAMEConfig(affinity="knn", knn=1))
    assert torch.equal(W.sum(1), torch.ones(5)) and W[0, 1] == 1 and W.diagonal().sum() == 0
    rbf = affinity_matrix(feats, LAMEConfig(affinity="rbf", knn=2))
    d = torch.cdist(feats, feats)
    sigma = d.sort(dim=1).values[:, 1].mean()  # 2nd nearest counting the point itself
    assert torch.allclose(rbf, torch.exp(-d ** 2 / (2 * sigma ** 2)), atol=1e-6)
    assert torch.allclose(affinity_matrix(feats, LAMEConfig(affinity="linear")), feats @ feats.T)


def test_batch_of_one_returns_the_model_softmax():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    p = F.softmax(logits, dim=1)
    assert torch.equal(lame_assignments(p, torch.randn(1, 4)), p)
    out = corrected_logits(logits, torch.randn(1, 4), 3, LAMEConfig())
    assert torch.allclose(F.softmax(out, dim=1), p, atol=1e-6)


@pytest.mark.parametrize("affinity", ["knn", "rbf", "linear"])
def test_no_nan_on_degenerate_batches(affinity):
    cfg = LAMEConfig(affinity=affinity, knn=5)
    same = torch.ones(6, 4)                       # identical features: rbf σ = 0
    p = F.softmax(torch.randn(6, 5), 1)
    p[:, 4] = 0.0                                 # a class nobody predicts (absent from the batch)
    p = p / p.sum(1, keepdim=True)
    for feats, probs in [(same, p), (torch.zeros(6, 4), p), (torch.randn(2, 4), p[:2]), (torch.randn(3, 4), p[:3])]:
        Y = lame_assignments(probs, feats, cfg)
        assert torch.isfinite(Y).all() and torch.allclose(Y.sum(1), torch.ones(len(Y)), atol=1e-5)
        assert (Y[:, 4] < 1e-6).all()             # an absent class does not come back
    logits = torch.full((6, 8), UNSEEN_LOGIT)     # 3 unseen classes stay unseen
    logits[:, :5] = torch.randn(6, 5)
    out = corrected_logits(logits, torch.randn(6, 4), 5, cfg)
    assert torch.isfinite(out).all() and (out[:, 5:] == UNSEEN_LOGIT).all()


def test_laplacian_term_fixes_class_grouped_batches():
    """Clustered features + noisy predictions: neighbours vote the noise away."""
    g = torch.Generator().manual_seed(1)
    y = torch.tensor([0] * 16 + [1] * 16)
    feats = F.one_hot(y, 8).float() * 3 + 0.3 * torch.randn(32, 8, generator=g)
    logits = F.one_hot(y, 4).float() * 1.0 + 1.2 * torch.randn(32, 4, generator=g)
    before = (logits.argmax(1) == y).float().mean()
    Y = lame_assignments(F.softmax(logits, 1), feats, LAMEConfig(affinity="knn", knn=5))
    assert (Y.argmax(1) == y).float().mean() > before + 0.1


def test_nonsense_settings_get_a_clear_error(fast_scenario):
    with pytest.raises(ClpeftError, match="affinity"):
        LAMEConfig(affinity="cosine")
    with pytest.raises(ClpeftError, match="knn"):
        LAMEConfig(knn=0)
    with pytest.raises(ClpeftError, match="knn must be ≥ 2 with the rbf affinity"):
        LAMEConfig(affinity="rbf", knn=1)  # σ = 0: LAME would silently change nothing
    with pytest.raises(ClpeftError, match="batch_size"):
        LAMEConfig(batch_size=1)
    with pytest.raises(ClpeftError, match="sigma_floor"):
        LAMEConfig(sigma_floor=0.0)
    with pytest.raises(ClpeftError, match="unknown test-time"):
        resolve(fast_scenario, tta="tent")
    fast_scenario["tta"] = {"lame": {"lam": -1}}
    with pytest.raises(ClpeftError, match="lam"):
        resolve(fast_scenario, tta="lame")


def test_run_with_lame_reports_every_eval_order_with_and_without(fast_scenario):
    fast_scenario["train"]["eval_batch_size"] = 50  # the last batch is partial
    results = run(resolve(fast_scenario, strategy="linear_probe", tta="lame"))
    rows = results["final_accuracy_by_eval_order"]
    ttas = ("none", "lame", "lame[official]", "lame[affinity=linear]")  # configured kNN, the official rbf, linear
    assert {(r["eval_order"], r["tta"]) for r in rows} == {(o, t) for o in ("iid", "class_grouped", "dirichlet")
                                                          for t in ttas}
    none = {r["eval_order"]: r["final_accuracy"] for r in rows if r["tta"] == "none"}
    assert len(set(none.values())) == 1  # without adaptation the batch order cannot matter
    iid_lame = next(r for r in rows if r["eval_order"] == "iid" and r["tta"] == "lame")
    assert iid_lame["final_accuracy"] == pytest.approx(results["metrics"]["final_accuracy"])
    assert all(0.0 <= r["final_accuracy"] <= 1.0 for r in rows)


def test_avalanche_plugin_replaces_the_eval_outputs(fast_scenario):
    from clpeft.run import build

    stream, model, _, strategy, _ = build(resolve(fast_scenario, strategy="linear_probe"))
    strategy.train(stream.train_stream[0])
    outputs = {}

    class Grab(LAMEPlugin):
        def after_eval_forward(self, strategy, **kwargs):
            raw = strategy.mb_output.clone()
            super().after_eval_forward(strategy, **kwargs)
            outputs.setdefault("pairs", []).append((raw, strategy.mb_output.clone(), self._features.clone()))

    plugin = Grab(LAMEConfig(affinity="knn", knn=3, batch_size=1000))  # one group: the whole evaluation batch
    strategy.plugins.append(plugin)
    strategy.eval([stream.test_stream[0]])
    raw, corrected, feats = outputs["pairs"][0]
    seen = model.head.num_seen
    expected = lame_assignments(F.softmax(raw[:, :seen], 1), feats, plugin.config)
    assert torch.allclose(F.softmax(corrected[:, :seen], 1), expected, atol=1e-5)
    assert plugin._hook is None  # removed after evaluation


def test_evaluation_batches_are_corrected_in_groups_of_the_lame_batch_size():
    """LAME sees online batches of ``batch_size`` whatever the evaluation batch: the pairwise term grows with the
    group (rbf and linear row sums), so a 256-sample evaluation batch must not become one LAME batch."""
    g = torch.Generator().manual_seed(3)
    logits, feats = torch.randn(40, 4, generator=g), torch.randn(40, 6, generator=g)
    cfg = LAMEConfig(affinity="rbf", knn=5, batch_size=16)
    groups = [lame_assignments(F.softmax(logits[i:i + 16], 1), feats[i:i + 16], cfg) for i in (0, 16, 32)]
    got = F.softmax(corrected_logits(logits, feats, 4, cfg), 1)
    assert torch.allclose(got, torch.cat(groups), atol=1e-6)
    whole = lame_assignments(F.softmax(logits, 1), feats, cfg)
    assert not torch.allclose(got, whole, atol=1e-3)  # one group of 40 is another correction


def synthetic_test_set(n_per_class=40, classes=10, seed=0):
    """Features in noisy class clusters, and logits whose softmax is roughly calibrated (about 70 % right)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    centres = 2.0 * torch.randn(classes, 16, generator=g)
    feats = centres[y] + 1.0 * torch.randn(len(y), 16, generator=g)
    logits = 1.5 * F.one_hot(y, classes).float() + 1.0 * torch.randn(len(y), classes, generator=g)
    return logits, feats, y


@pytest.mark.parametrize("seed", [0, 1])
def test_default_lame_helps_grouped_batches_and_costs_nothing_on_iid(seed):
    """The default settings do what LAME is for: class-grouped and Dirichlet batches gain, i.i.d. batches lose
    at most a point (the official rbf k = 5 on the same i.i.d. batches is the contrast it was chosen against)."""
    from clpeft.streams.stream import eval_permutation

    logits, feats, y = synthetic_test_set(seed=seed)

    def accuracy(order, cfg):
        perm = eval_permutation(y, 64, order, seed, 0.1)
        hits = 0
        for start in range(0, len(y), 64):
            idx = perm[start:start + 64]
            out = logits[idx] if cfg is None else corrected_logits(logits[idx], feats[idx], 10, cfg)
            hits += int((out.argmax(1) == y[idx]).sum())
        return hits / len(y)

    base = accuracy("iid", None)
    default = LAMEConfig()
    assert accuracy("class_grouped", default) > base + 0.02
    assert accuracy("dirichlet", default) > base + 0.01
    assert accuracy("iid", default) > base - 0.01
    assert accuracy("iid", LAMEConfig(affinity="rbf", knn=5)) < base - 0.1  # the official default on i.i.d. batches
