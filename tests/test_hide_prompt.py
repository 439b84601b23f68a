"""HiDe-Prompt and its shared parts: the task-identity router, class centroids and their sampler, TAP's step cap."""
import numpy as np
import pytest
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.models.head_alignment import CentroidSampler, ClassCentroids, align_head
from clpeft.models.task_router import TaskRouter
from clpeft.run import run
from clpeft.streams.stream import materialize


def test_the_router_is_the_official_residual_mlp_and_routes_through_the_class_experiences():
    torch.manual_seed(0)
    router = TaskRouter(8, 6, ratio=2)
    for layer in (router.fc1, router.fc2, router.head):  # non-zero biases so that they count
        torch.nn.init.normal_(layer.bias, std=0.1)
    x = torch.randn(5, 8)
    # MlpMapping(hidden=[2]): Linear(D, 2D) → GELU → Linear(2D, D), + x, LayerNorm; then the head
    hidden = torch.nn.functional.gelu(x @ router.fc1.weight.T + router.fc1.bias) @ router.fc2.weight.T + router.fc2.bias
    want = torch.nn.functional.layer_norm(x + hidden, (8,), router.norm.weight, router.norm.bias) @ router.head.weight.T \
        + router.head.bias
    assert torch.allclose(router(x), want, atol=1e-6)
    router.learn_classes(range(0, 2), 0)
    router.learn_classes(range(2, 4), 1)
    task, cls = router.route(x, seen=4)
    assert torch.equal(cls, router(x)[:, :4].argmax(1))  # unseen classes never win
    assert torch.equal(task, cls // 2)


def _blobs(centres, n=50, spread=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([c + spread * torch.randn(n, len(c), generator=g) for c in centres])


def test_centroids_are_each_clusters_mean_and_population_variance_and_fitting_is_seeded():
    far = [torch.tensor([5.0, 0.0]), torch.tensor([-5.0, 0.0])]
    x = torch.cat([_blobs(far), _blobs([f + torch.tensor([0.0, 20.0]) for f in far], seed=1)])
    y = torch.tensor([0] * 100 + [1] * 100)
    cents = ClassCentroids(2, 3, k=2)
    cents.fit(x, y, seed=7)
    for c, rows in ((0, x[:100]), (1, x[100:])):
        got = sorted(cents.means[c].tolist())
        parts = [rows[:50].double(), rows[50:].double()]
        want = sorted(p.mean(0).tolist() for p in parts)
        assert np.allclose(got, want, atol=1e-9)
        order = cents.means[c][:, 0].argsort(descending=True)  # the +5 blob first
        for j, p in zip(order.tolist(), parts):
            assert torch.allclose(cents.vars[c, j], p.var(0, unbiased=False), atol=1e-9)
    assert cents.fitted.tolist() == [True, True, False] and cents.centroids().shape == (4, 2)
    again = ClassCentroids(2, 3, k=2)
    again.fit(x, y, seed=7)
    assert torch.equal(again.means, cents.means)
    with pytest.raises(ClpeftError, match="fewer than the 60 centroids"):
        ClassCentroids(2, 3, k=60).fit(x[:50], y[:50], seed=0)


def test_the_centroid_sampler_draws_each_centroids_gaussian_and_skips_single_points():
    cents = ClassCentroids(3, 2, k=2)
    cents.means[0] = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    cents.vars[0] = torch.tensor([[0.25, 1.0, 4.0], [0.0, 0.0, 0.0]], dtype=torch.float64)  # cluster 1: one point
    cents.means[1], cents.vars[1] = 10.0, 1.0
    cents.fitted[:] = True
    x, y = CentroidSampler(cents, [0, 1], ridge=0.0).sample(20000, torch.Generator().manual_seed(0))
    assert y.tolist().count(0) == 20000 and y.tolist().count(1) == 40000
    first = x[y == 0].double()
    assert torch.allclose(first.mean(0), cents.means[0, 0], atol=0.05)
    assert torch.allclose(first.var(0), cents.vars[0, 0], rtol=0.05)


def test_align_head_takes_only_the_steps_it_is_given():
    head = torch.nn.Linear(3, 2)
    cents = ClassCentroids(3, 2, k=1)
    cents.means[:, 0] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
    cents.vars[:] = 0.1
    cents.fitted[:] = True
    calls = []
    head.register_forward_hook(lambda *a: calls.append(1))
    align_head(head, list(head.parameters()), CentroidSampler(cents, [0, 1]), epochs=3, lr=0.1, samples_per_class=8,
               batch_size=8, generator=torch.Generator().manual_seed(0), steps=1)
    assert len(calls) == 3  # one minibatch per epoch, the rest of the 16 samples unused


HIDE = {"options": {"centroids": 3, "ca_epochs": 2, "router_epochs": 1, "length": 4},
        "train": {"epochs": 2, "lr": 0.01, "batch_size": 32}, "model": {"backbone": "vit_tiny_fmnist", "pretrained": True}}


def test_hide_prompt_routes_each_sample_to_a_prompt_copies_and_averages_prompts(fast_scenario, tmp_path):
    config = resolve(fast_scenario, strategy="hide_prompt", seed=0, overrides=HIDE)
    states = {}

    def check(i, strategy, stream):
        pool = strategy.pool
        states[i] = {n: {k: v.clone() for k, v in pool.pet.state_dict(n).items()} for n in pool.names}
        if i > 0:  # earlier prompts never move once their experience is over
            for n in pool.names[:i]:
                assert all(torch.equal(states[i][n][k], states[i - 1][n][k]) for k in states[i][n])
        model = strategy.model
        model.eval()
        x, _ = materialize(stream.test_stream[0].dataset)
        x = x[:6] if stream.batch_eval_transform is None else stream.batch_eval_transform(x[:6])
        with torch.no_grad():
            out = strategy.predict(x)
            task, _ = strategy.router.route(strategy.frozen_features(x), model.head.num_seen)
            assert torch.equal(out.task, task)
            for b in range(len(x)):  # the second pass: each sample with its routed prompt, alone
                with pool.concatenated(task[b:b + 1, None]):
                    alone = model.head(model.features(x[b:b + 1]))
                assert torch.allclose(out.logits[b:b + 1], alone, atol=1e-5)

    results = run(config, out_dir=tmp_path / "hide", after_experience=check)
    # prompt 1 started as prompt 0 and trained; after training it took 1 % of prompt 0's
    assert not all(torch.equal(states[1]["p1"][k], states[0]["p1"][k]) for k in states[1]["p1"])
    routed = np.array(results["task_inference_matrix"], dtype=float)
    assert routed.shape == (3, 3) and np.isfinite(np.diag(routed)).all()
    assert set(results["views"]) == {"task-identity router"}
    assert [e["phase"] for e in results["training"] if e["experience"] == 1] == ["router", "train", "train"]
    assert results["health"]["status"] == "ok"


def test_the_prompt_momentum_is_what_the_official_code_applies_after_training(fast_scenario):
    from clpeft.run import build

    built = build(resolve(fast_scenario, strategy="hide_prompt", seed=0, overrides=HIDE))
    hide = built.strategy
    pool = hide.pool
    old = [pool.pet.state_dict(n) for n in pool.names[:2]]
    trained = pool.pet.state_dict(pool.names[2])
    pool.pet.average_into(pool.names[2], pool.names[:2], 1.0 - hide.options.prompt_momentum)
    for k, v in pool.pet.state_dict(pool.names[2]).items():
        assert torch.allclose(v, 0.99 * trained[k] + 0.01 * (old[0][k] + old[1][k]) / 2, atol=1e-6)
    w = hide._prompt_weights(2)  # the forward's mixture: 0.99 on prompt 2, 0.01/2 on each earlier one
    assert torch.allclose(w, torch.tensor([[0.005, 0.005, 0.99]]))
    assert torch.equal(hide._prompt_weights(0), torch.tensor([[1.0]]))


@pytest.mark.parametrize("scenario, epochs, length, reg", [("prompt_pool_cifar100_10t", 50, 10, 0.1),
                                                           ("prompt_pool_imagenet_r_10t", 150, 40, 0.5)])
def test_the_official_setting_scenarios_hold_the_training_scripts(scenario, epochs, length, reg):
    """training_scripts/train_{cifar100,imr}_vit.sh on its configs: rates × 24/256, the router's 20 epochs, its
    timm 0.6.7 backbone (augreg IN-21k→1k)."""
    from clpeft.config import load_scenario

    c = resolve(load_scenario(scenario), strategy="hide_prompt")
    t, o = c.train, c.options
    assert (t.optimizer, t.epochs, t.grad_clip_norm, t.weight_decay) == ("adam", epochs, 1.0, 0.0)
    assert (o["length"], o["reg"], o["router_epochs"], o["ca_lr"]) == (length, reg, 20, 0.005)
    assert [t.lr, o["router_lr"], o["router_ca_lr"]] == pytest.approx([0.03 * 24 / 256, 0.0005 * 24 / 256,
                                                                       0.005 * 24 / 256], rel=1e-12)
    assert c.model.backbone == "vit_base_patch16_224.augreg_in21k_ft_in1k" and c.model.head_init_std == 0.02
