"""Weight Aligning: herding, the exemplar budget, PyCIL's KD, and the aligning step inside a run."""
import math

import pytest
import torch
import torch.nn.functional as F

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.run import build
from clpeft.strategies.memory import ExemplarMemory, herding_order
from clpeft.strategies.wa import kd_loss


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_herding_picks_the_running_mean_closest_to_the_class_mean():
    # unit vectors at 0°, 40°, 90°: the mean points at ~43°, so 40° first; then (40°+90°)/2 is closer
    # to the mean (0.589, 0.548) than (40°+0°)/2 (squared distances 0.117 vs 0.138), then 0°.
    feats = torch.tensor([unit(0), unit(40), unit(90)]) * torch.tensor([[3.0], [0.5], [2.0]])  # norms do not matter
    assert herding_order(feats, 3) == [1, 2, 0]
    assert herding_order(feats, 1) == [1]
    assert herding_order(feats, 10) == [1, 2, 0]  # never more than the class has, no repeats


def test_herding_agrees_with_a_brute_force_greedy():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(25, 6, generator=g)
    phi = F.normalize(feats.double(), dim=1)
    mu, picked = phi.mean(0), []
    for k in range(1, 9):
        best = min((i for i in range(25) if i not in picked),
                   key=lambda i: float(((mu - (phi[picked].sum(0) + phi[i]) / k) ** 2).sum()))
        picked.append(best)
    assert herding_order(feats, 8) == picked


def test_kd_is_pycil_formula():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    expected = -(F.softmax(t / 2, 1) * F.log_softmax(s / 2, 1)).sum(1).mean()
    assert torch.allclose(kd_loss(s, t, 2.0), expected)


def wa_config(fast_scenario, **options):
    fast_scenario["strategies"] = {"wa": {"options": {"memory_size": 10, **options}}}
    return resolve(fast_scenario, strategy="wa", pet="adapter")


@pytest.mark.parametrize("options, quota", [({}, [2, 1, 1]), ({"memory_size": None, "memory_per_class": 2}, [2, 2, 2])])
def test_memory_stays_within_budget_and_class_balanced(fast_scenario, options, quota):
    stream, model, _, strategy, _ = build(wa_config(fast_scenario, **options))
    for i, exp in enumerate(stream.train_stream):
        strategy.train(exp)
        memory = strategy.memory
        counts = {c: len(d) for c, d in memory.classes.items()}
        assert set(counts) == set(range(model.head.num_seen))
        assert all(n == quota[i] for n in counts.values()), counts
        if memory.memory_size is not None:
            assert len(memory) <= memory.memory_size
        labels = sorted(int(y) for y in memory.buffer.targets)
        assert labels == sorted(c for c, n in counts.items() for _ in range(n))


def test_wa_aligns_new_rows_to_the_old_mean_norm_and_trains_on_exemplars(fast_scenario):
    stream, model, _, strategy, _ = build(wa_config(fast_scenario))
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    w = torch.cat([c.weight for c in model.head.chunks])
    assert float(w[4:].norm(dim=1).mean()) == pytest.approx(float(w[:4].norm(dim=1).mean()), rel=1e-5)
    assert len(strategy.gammas) == 1
    assert strategy.teacher is not None and not any(p.requires_grad for p in strategy.teacher.parameters())


def test_wa_without_aligning_leaves_the_head_alone(fast_scenario):
    stream, model, _, strategy, _ = build(wa_config(fast_scenario, align=False))
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    assert strategy.gammas == []


def test_memory_settings_are_checked():
    with pytest.raises(ClpeftError, match="exactly one"):
        ExemplarMemory(memory_size=None, memory_per_class=None)
    with pytest.raises(ClpeftError, match="at least 1"):
        ExemplarMemory(memory_size=0)


def test_aligning_moves_predictions_back_to_old_classes_when_new_rows_are_larger():
    """WA's premise: a head trained on imbalanced data grows the new rows' norms, which out-votes old classes by
    norm alone; aligning the norms gives those samples back to their (old) classes."""
    from clpeft.models.heads import IncrementalHead, align_new_class_norms

    g = torch.Generator().manual_seed(0)
    head = IncrementalHead(8, 4)
    old, new = head.grow(2), head.grow(2)
    with torch.no_grad():
        directions = F.normalize(torch.randn(4, 8, generator=g), dim=1)
        old.weight.copy_(directions[:2]), new.weight.copy_(3.0 * directions[2:])
        old.bias.zero_(), new.bias.zero_()
    # old-class samples: near their own direction, but also partly along the new ones
    x = directions[:2].repeat(50, 1) + 0.6 * directions[2:].sum(0) + 0.3 * torch.randn(100, 8, generator=g)
    y = torch.arange(2).repeat(50)
    before = (head(x).argmax(1) == y).float().mean()
    gamma = align_new_class_norms(head, 2)
    after = (head(x).argmax(1) == y).float().mean()
    assert gamma == pytest.approx(1 / 3, rel=1e-5)
    assert before < 0.5 < after


def test_wa_records_how_well_the_model_fits_its_old_exemplars(fast_scenario):
    """The check that says which regime a WA run is in: the accuracy on the exemplars it trained on."""
    stream, model, _, strategy, _ = build(wa_config(fast_scenario))
    for experience in list(stream.train_stream)[:3]:
        strategy.train(experience)
    fit = strategy.summary()["exemplar_accuracy"]
    assert len(fit) == 2 and all(0.0 <= a <= 1.0 for a in fit)
    metrics = strategy.report_metrics()  # fractions, as every method's (the report shows them in %)
    assert metrics["old exemplars fit (last)"] == pytest.approx(fit[-1])
    assert metrics["aligning steps with γ > 1"] == pytest.approx(sum(g > 1 for g in strategy.gammas) / 2)
    logits, labels = strategy.extract_features(strategy.memory.buffer.eval(), features=model)
    seen = set(labels.tolist())
    assert seen == set(range(model.head.num_seen))  # the memory after experience 2 holds every seen class
