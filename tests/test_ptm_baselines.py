"""First-session adaptation and analytic classifiers: APER, RanPAC, SLCA on a tiny stream."""
import pytest
import torch

from clpeft.config import resolve
from clpeft.run import build, run
from clpeft.streams.stream import ContinualStream


@pytest.fixture
def ptm_scenario(fast_scenario):
    fast_scenario["train"].update(epochs=1, lr=0.01, optimizer="sgd")
    lenet = {"backbone": "lenet", "pretrained": False}  # cheap where no PET needs the ViT
    fast_scenario["strategies"] = {"ranpac": {"options": {"projection": 300}}, "slca": {"model": lenet}}
    return fast_scenario


@pytest.mark.parametrize("strategy", ["aper", "ranpac"])
def test_first_session_adaptation_never_trains_after_experience_0(ptm_scenario, strategy):
    stream, model, pet, s, _ = build(resolve(ptm_scenario, strategy=strategy, pet="adapter"))
    s.train(stream.train_stream[0])
    adapted = {k: v.clone() for k, v in pet.state_dict().items()}
    for exp in list(stream.train_stream)[1:]:
        s.train(exp)
    assert all(torch.equal(v, pet.state_dict()[k]) for k, v in adapted.items())
    assert {e["experience"] for e in s.training_log} == {0}  # no gradient step after the first experience


def test_aper_prototypes_are_class_means_of_pretrained_and_adapted_features(ptm_scenario):
    stream, model, pet, s, _ = build(resolve(ptm_scenario, strategy="aper", pet="adapter"))
    s.train(stream.train_stream[0])
    from clpeft.streams.stream import materialize

    x, y = materialize(stream.train_stream[0].dataset)
    model.eval()
    with torch.no_grad():
        with pet.using(None):
            pre = model.features(x)
        feats = torch.cat([pre, model.features(x)], dim=1)
    for c in range(4):
        assert torch.allclose(s.prototypes.prototypes[c], feats[y == c].mean(0), atol=1e-5)
    assert s.prototypes.known[:4].all() and not s.prototypes.known[4:].any()


def test_ridge_lambda_never_sees_test_data_and_the_projection_is_seeded(ptm_scenario, monkeypatch):
    """Training (statistics, λ, solve) must not touch the test set: any test-set access during train() fails."""
    stream, model, pet, s, _ = build(resolve(ptm_scenario, strategy="ranpac", pet="adapter"))

    def forbidden(*args, **kwargs):
        raise AssertionError("the test set was read while training")

    with monkeypatch.context() as patch:
        patch.setattr(ContinualStream, "eval_batches", forbidden)
        patch.setattr(ContinualStream, "test_set", forbidden)
        for exp in stream.train_stream:
            s.train(exp)
    assert len(s.lambdas) == 3 and all(lam > 0 for lam in s.lambdas)
    again = build(resolve(ptm_scenario, strategy="ranpac", pet="adapter")).strategy
    assert torch.equal(again.ridge.random, s.ridge.random)  # drawn from the run's seed
    other = build(resolve(ptm_scenario, strategy="ranpac", pet="adapter", seed=1)).strategy
    assert not torch.equal(other.ridge.random, s.ridge.random)


@pytest.mark.parametrize("strategy,pet", [("ranpac", "adapter"), ("slca", None), ("aper", "adapter")])
def test_resume_gives_the_same_results_file(tmp_path, ptm_scenario, strategy, pet):
    from test_resume import Crash, crash_after

    config = resolve(ptm_scenario, strategy=strategy, pet=pet)
    with pytest.raises(Crash):
        run(config, out_dir=tmp_path / "a", after_experience=crash_after(1))
    run(config, out_dir=tmp_path / "a", resume=True)
    run(config, out_dir=tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


def test_slca_aligns_the_head_for_evaluation_and_trains_on_from_the_unaligned_one(ptm_scenario):
    ptm_scenario["strategies"]["slca"]["options"] = {"ca_epochs": 2, "ca_samples": 16}
    stream, model, _, s, _ = build(resolve(ptm_scenario, strategy="slca"))
    s.train(stream.train_stream[0])
    assert s.unaligned is None  # nothing to align with one experience
    old_chunk = model.head.chunks[0].weight.detach().clone()
    s.train(stream.train_stream[1])
    aligned = [c.weight.detach().clone() for c in model.head.chunks]
    assert s.unaligned is not None and not torch.equal(aligned[0], s.unaligned[0]["weight"])
    assert torch.equal(s.unaligned[0]["weight"], old_chunk)  # the old chunk did not train in the slow learner
    backup = [u["weight"].clone() for u in s.unaligned]
    restored = []
    before = s.before_experience

    def spy():
        before()
        restored.extend(c.weight.detach().clone() for c in model.head.chunks)

    s.before_experience = spy
    s.train(stream.train_stream[2])
    assert all(torch.equal(r, b) for r, b in zip(restored, backup))
    groups = s.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(0.01 * 0.01) and groups[1]["lr"] == pytest.approx(0.01)
