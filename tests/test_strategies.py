"""The shared loop and the baselines: what trains, what stays frozen, what the loss sees."""
import pytest
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.run import build, run
from clpeft.strategies import STRATEGIES, get_strategy


def test_registry_lists_the_baselines_and_rejects_unknown_names():
    assert {"finetune", "joint", "linear_probe", "prototype", "ewc", "lwf", "replay"} <= set(STRATEGIES)
    with pytest.raises(ClpeftError, match="unknown strategy"):
        get_strategy("nope")


def test_linear_probe_leaves_the_backbone_bit_identical(fast_scenario):
    stream, model, _, strategy, _ = build(resolve(fast_scenario, strategy="linear_probe"))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    strategy.train(stream.train_stream[0])
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    assert model.head.num_seen == 4


def test_prototype_head_rows_are_class_mean_features(fast_scenario):
    stream, model, _, strategy, _ = build(resolve(fast_scenario, strategy="prototype"))
    exp = stream.train_stream[0]
    strategy.train(exp)
    from clpeft.streams.stream import materialize

    x, y = materialize(exp.dataset)
    model.eval()
    with torch.no_grad():
        f = torch.nn.functional.normalize(model.features(x), dim=-1)
    for c in range(4):
        assert torch.allclose(model.head.chunks[0].weight[c], f[y == c].mean(0), atol=1e-5)


def test_current_scope_loss_gives_old_heads_zero_gradient_and_a_fresh_optimizer(fast_scenario):
    fast_scenario["train"]["loss_scope"] = "current"
    stream, model, _, strategy, _ = build(resolve(fast_scenario, strategy="finetune", pet="adapter"))
    strategy.train(stream.train_stream[0])
    old = model.head.chunks[0].weight.detach().clone()
    first_opt = strategy.optimizer
    strategy.train(stream.train_stream[1])
    assert strategy.optimizer is not first_opt
    assert torch.equal(model.head.chunks[0].weight, old)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in strategy.trainable_parameters()}


def test_joint_trains_on_everything_seen(fast_scenario):
    stream, model, _, strategy, _ = build(resolve(fast_scenario, strategy="joint"))
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    seen = len(stream.train_stream[0].dataset) + len(stream.train_stream[1].dataset)
    assert strategy.seen is not None and len(strategy.seen) == seen


@pytest.mark.parametrize("name", ["ewc", "lwf", "replay"])
def test_avalanche_methods_run_on_our_streams(fast_scenario, name):
    result = run(resolve(fast_scenario, strategy=name))
    R = result["accuracy_matrix"]
    assert len(R) == 3
    assert R[-1][-1] > 0.3  # learned the last experience (chance over 10 logits is 0.1)


def test_bad_strategy_options_are_refused_when_the_run_is_configured(fast_scenario):
    fast_scenario["strategies"] = {"lwf": {"options": {"alpah": 1.0}}}
    with pytest.raises(ClpeftError, match="strategy lwf has no option 'alpah'; its options: alpha, temperature"):
        resolve(fast_scenario, strategy="lwf")
    with pytest.raises(ClpeftError, match="does not train a PET"):
        resolve(fast_scenario, strategy="linear_probe", pet="lora")
