"""MOS: the adapter's pulls as the official code makes them, the self-refining choice, snapshots and statistics."""
import numpy as np
import pytest
import torch

from clpeft.config import resolve
from clpeft.run import build, run
from clpeft.streams.stream import materialize
from clpeft.strategies.mos import refine_choice

ADAPTFORMER = {"position": "mlp_residual", "activation": "relu", "dropout": 0.1, "scale": 0.1, "bottleneck": 8,
               "blocks": None}


def _official_loop(head_logits, start, task_of, rounds):
    """The official per-sample loop (models/mos.py `_eval_cnn`), transcribed."""
    finals, choices = [], []
    for b in range(len(start)):
        loop, prev = 0, int(start[b])
        while True:
            loop += 1
            cur = head_logits[b, prev]
            new = int(task_of[int(cur.argmax())])
            if loop >= rounds or new == prev:
                break
            prev = new
        finals.append(cur)
        choices.append(prev)
    return torch.stack(finals), torch.tensor(choices)


@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_the_refined_choice_is_the_official_per_sample_loop(rounds):
    g = torch.Generator().manual_seed(0)
    b, k, c = 64, 4, 8
    task_of = torch.arange(c) // 2
    head = torch.randn(b, k, c, generator=g) * 3
    start = torch.randint(0, k, (b,), generator=g)
    final, choice = refine_choice(head, start, task_of, rounds)
    want_final, want_choice = _official_loop(head, start, task_of, rounds)
    assert torch.equal(final, want_final) and torch.equal(choice, want_choice)
    if rounds > 1:
        assert (choice != start).any()  # the case exercises a change of mind


def _mos(fast_scenario, **options):
    config = resolve(fast_scenario, strategy="mos", pet="adapter", seed=0,
                     overrides={"pet": ADAPTFORMER, "options": options})
    built = build(config)
    return built.model, built.strategy


def _two_snapshots(mos, model):
    """State as after experience 1 with θ0, θ1 drawn at random (snapshots e0, e1, prefix sums as stored)."""
    g = torch.Generator().manual_seed(1)
    mos.pet.add("current"); mos.pet.remove("default")
    for name in ("e0", "e1"):
        mos.pet.add(name)
        mos.pet.load_state_dict({k: torch.randn(v.shape, generator=g) * 0.05
                                 for k, v in mos.pet.state_dict(name).items()}, name)
    s0, s1 = mos.pet.state_dict("e0"), mos.pet.state_dict("e1")
    mos.names, mos.prefix_sums = ["e0", "e1"], [s0, {k: s0[k] + s1[k] for k in s0}]
    model.eval()
    return s0, s1


def _test_images(scenario):
    stream = build(resolve(scenario, strategy="prototype")).stream
    x, _ = materialize(stream.test_stream[0].dataset)
    return x if stream.batch_eval_transform is None else stream.batch_eval_transform(x)


def test_an_evaluation_forward_moves_a_snapshot_as_the_official_forward_does(fast_scenario):
    """Snapshot k ≥ 1: layer l computes with (1−m)^(l+1)·θ + (1−(1−m)^(l+1))·μ_k, and every layer ends the
    forward at (1−m)^L·θ + …; snapshot 0 never moves."""
    model, mos = _mos(fast_scenario)
    s0, s1 = _two_snapshots(mos, model)
    m, layers = mos.options.adapter_momentum, list(mos.pet.layers.items())
    used = {}

    def record(target):
        def hook(module, args):  # returns None: the input stays as it is
            used.setdefault(target, module.down.weight.detach().clone())
        return hook

    hooks = [layer.instances["e1"].register_forward_pre_hook(record(target)) for target, layer in layers]
    x = _test_images(fast_scenario)
    with torch.no_grad():
        mos.passes(model.adapter(x[:8]), mos.names, around=mos._around)
    for h in hooks:
        h.remove()
    depth = len(layers)
    for l, (target, _) in enumerate(layers):
        key = f"{target}.down.weight"
        keep = (1 - m) ** (l + 1)
        assert torch.allclose(used[target], keep * s1[key] + (1 - keep) * s0[key], atol=1e-6)
        keep = (1 - m) ** depth
        assert torch.allclose(mos.pet.state_dict("e1")[key], keep * s1[key] + (1 - keep) * s0[key], atol=1e-6)
    assert all(torch.equal(v, s0[k]) for k, v in mos.pet.state_dict("e0").items())


def test_per_step_pulls_once_after_each_step_and_evaluation_leaves_snapshots_alone(fast_scenario):
    model, mos = _mos(fast_scenario, ema_mode="per_step")
    s0, s1 = _two_snapshots(mos, model)
    mos.pet.load_state_dict(s1, "current")
    mos.experience_index = 2
    x = _test_images(fast_scenario)
    with torch.no_grad():
        mos.passes(model.adapter(x[:8]), mos.names, around=mos._around)
        mos.training_logits(x[:8])
    assert all(torch.equal(v, s1[k]) for k, v in mos.pet.state_dict("e1").items())
    assert all(torch.equal(v, s1[k]) for k, v in mos.pet.state_dict("current").items())
    mos.after_step()  # θ ← 0.9·θ + 0.1·mean(e0, e1)
    for k, v in mos.pet.state_dict("current").items():
        assert torch.allclose(v, 0.9 * s1[k] + 0.1 * (s0[k] + s1[k]) / 2, atol=1e-7)


def test_mos_runs_snapshots_statistics_and_reports_its_choice_as_task_inference(fast_scenario, tmp_path):
    config = resolve(fast_scenario, strategy="mos", pet="adapter", seed=0,
                     overrides={"pet": ADAPTFORMER, "options": {"ca_epochs": 2, "ca_samples": 16},
                                "train": {"optimizer": "sgd", "lr": 0.05, "epochs": 2},  # MOS's optimiser
                                # the bundled pretrained ViT: on the random one a head at 0.1 × the rate learns
                                # nothing in two epochs, and the run is rightly not "ok"
                                "model": {"backbone": "vit_tiny_fmnist", "pretrained": True}})
    seen = {}

    def check(i, strategy, stream):
        assert strategy.names == [f"e{k}" for k in range(i + 1)]
        for name in strategy.names:
            assert not any(p.requires_grad for p in strategy.pet.parameters(name))
        assert any(p.requires_grad for p in strategy.pet.parameters("current"))
        classes = [c for c in range(strategy.model.head.num_seen)]
        assert (strategy.stats.counts[classes] > 0).all()  # every seen class has its Gaussian
        assert (strategy.class_task[classes] >= 0).all()
        seen[i] = strategy.pet.state_dict("e0")

    results = run(config, out_dir=tmp_path / "mos", after_experience=check)
    for k, v in seen[0].items():  # snapshot 0 (the prototypes' space) never moves
        assert torch.equal(seen[len(seen) - 1][k], v)
    routed = np.array(results["task_inference_matrix"], dtype=float)
    assert routed.shape == (3, 3) and np.isfinite(np.diag(routed)).all()
    assert set(results["views"]) == {"prototypes (snapshot 0)", "refined head"}
    assert results["strategy_summary"]["forward_passes_per_test_sample"] == 3
    assert results["health"]["status"] == "ok"



@pytest.mark.parametrize("scenario, lr, batch, epochs, wd", [("ptm_cifar100_b0_inc10", 0.03, 48, 20, 5e-4),
                                                             ("ptm_imagenet_r_b0_inc20", 0.05, 16, 10, 5e-3)])
def test_the_official_setting_scenarios_hold_mos_exps_configs(scenario, lr, batch, epochs, wd):
    """exps/mos_cifar_in21k.json and exps/mos_inr_in21k.json: SGD, rate, batch, epochs, weight decay, bottleneck 16,
    IN-21k weights, [0, 1] inputs, test batches of the training batch."""
    from clpeft.config import load_scenario

    c = resolve(load_scenario(scenario), strategy="mos")
    t = c.train
    assert (t.optimizer, t.lr, t.batch_size, t.eval_batch_size, t.epochs, t.weight_decay, t.schedule) == \
        ("sgd", lr, batch, batch, epochs, wd, "cosine")
    assert c.pet_config().bottleneck == 16 and c.model.backbone == "vit_base_patch16_224.augreg_in21k"
    assert not c.model.normalize and c.model.head_init_std == 0.02
    assert (c.options["reg"], c.options["adapter_momentum"], c.options["ca_epochs"], c.options["ca_lr"]) == \
        (0.1, 0.1, 30, 0.005)
