"""ExSSNeT / SSNeT / SupSup: zero forgetting proved on the weights, the phases, KKT, task inference."""
import math

import pytest
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.run import build, run
from clpeft.strategies.exssnet import entropy, knn_accuracy

LENET = {"backbone": "lenet", "pretrained": False}
MASK = {"supermask": {"sparsity_kept": 0.3, "signed_constant": True}}


@pytest.fixture
def lenet_scenario(fast_scenario):
    fast_scenario["model"] = dict(LENET)
    fast_scenario["pets"] = {k: dict(v) for k, v in MASK.items()}
    fast_scenario["train"].update(epochs=2, lr=0.01)
    return fast_scenario


def weights_of(strategy):
    return {n: layer.base.weight.detach().clone() for n, layer in strategy.layers.items()}


@pytest.mark.parametrize("backbone", ["lenet", "vit_tiny_fmnist_scratch"])  # an MLP, and every Linear of a ViT
def test_exssnet_never_changes_a_weight_inside_an_earlier_mask(lenet_scenario, backbone):
    """After task t, every weight some earlier mask uses is bit-identical, and task-IL accuracy on the
    earlier tasks does not move at all; only weights in no earlier mask were edited."""
    lenet_scenario["model"]["backbone"] = backbone
    if backbone != "lenet":
        lenet_scenario["pets"]["supermask"] = {"sparsity_kept": 0.3}
        lenet_scenario["train"].update(epochs=1, lr=0.001)
    seen = []

    def check(i, strategy, stream):
        now = weights_of(strategy)
        if seen:
            before, used_before = seen[-1]
            for n, w in now.items():
                assert torch.equal(w[used_before[n]], before[n][used_before[n]])
            assert any(not torch.equal(w, before[n]) for n, w in now.items())  # the weight phase did train
        seen.append((now, {n: m.clone() for n, m in strategy.used.items()}))

    results = run(resolve(lenet_scenario, strategy="exssnet", pet="supermask"), after_experience=check)
    R = results["accuracy_matrix_task_il"]
    for j in range(len(R)):
        assert all(R[i][j] == R[j][j] for i in range(j, len(R)))  # exactly unchanged
    if backbone == "lenet":  # the random-init ViT learns little in one epoch; the invariance is what counts there
        assert results["accuracy_matrix_task_il"][-1][0] > 0.5
    summary = results["strategy_summary"]
    assert summary["mask_overlap"][0] == 0.0 and len(summary["mask_overlap"]) == 3
    assert summary["editable_fraction"][0] == pytest.approx(0.3, abs=0.01)
    assert all(e < 0.3 for e in summary["editable_fraction"][1:])  # exclusivity shrinks the editable share
    assert len(results["task_inference_matrix"]) == 3
    assert 0.0 <= results["metrics"]["final_task_inference"] <= 1.0


def test_per_task_batchnorm_keeps_earlier_tasks_exact_on_a_cnn(fast_scenario):
    """ResNet-32 (BatchNorm everywhere): per-task statistics keep task-IL accuracy exactly unchanged."""
    fast_scenario["model"] = {"backbone": "resnet32", "pretrained": False}
    fast_scenario["stream"].update(n_experiences=2, first_experience_classes=5)
    fast_scenario["train"].update(epochs=1, lr=0.01, batch_size=128)
    fast_scenario["pets"] = {"supermask": {"sparsity_kept": 0.5}}
    results = run(resolve(fast_scenario, strategy="exssnet", pet="supermask"))
    R = results["accuracy_matrix_task_il"]
    assert R[1][0] == R[0][0]


def test_ssnet_may_edit_earlier_masks_and_supsup_never_edits_weights(lenet_scenario):
    stream, model, pet, strategy, _ = build(resolve(lenet_scenario, strategy="ssnet", pet="supermask"))
    strategy.train(stream.train_stream[0])
    used, before = {n: m.clone() for n, m in strategy.used.items()}, weights_of(strategy)
    strategy.train(stream.train_stream[1])
    after = weights_of(strategy)
    assert any(not torch.equal(after[n][used[n]], before[n][used[n]]) for n in after)  # not exclusive

    stream, model, pet, strategy, _ = build(resolve(lenet_scenario, strategy="supsup", pet="supermask"))
    before = weights_of(strategy)
    for exp in stream.train_stream[:2]:
        strategy.train(exp)
    assert all(torch.equal(w, before[n]) for n, w in weights_of(strategy).items())
    assert strategy.record["editable_fraction"] == [0.0, 0.0]


def test_masks_of_finished_tasks_are_frozen_and_old_head_chunks_untouched(lenet_scenario):
    stream, model, pet, strategy, _ = build(resolve(lenet_scenario, strategy="exssnet", pet="supermask"))
    strategy.train(stream.train_stream[0])
    scores = {k: v.clone() for k, v in pet.state_dict("task0").items()}
    head0 = [p.detach().clone() for p in model.head.chunks[0].parameters()]
    strategy.train(stream.train_stream[1])
    assert all(torch.equal(v, pet.state_dict("task0")[k]) for k, v in scores.items())
    assert all(torch.equal(a, b) for a, b in zip(head0, model.head.chunks[0].parameters()))
    assert pet.names == ["task0", "task1"]


def trained_supsup(scenario, **options):
    """SupSup after the whole stream, in eval mode."""
    stream, model, pet, strategy, _ = build(resolve(scenario, strategy="supsup", pet="supermask",
                                                    overrides={"options": options}))
    for exp in stream.train_stream:
        strategy.train(exp)
    model.eval()
    return strategy


def test_class_il_inference_is_per_sample_and_picks_the_lowest_entropy(lenet_scenario):
    strategy = trained_supsup(lenet_scenario)
    x = torch.rand(10, 1, 8, 8)
    with torch.no_grad():
        whole = strategy.predict(x)
        halves = [strategy.predict(x[:5]), strategy.predict(x[5:])]
    assert torch.equal(whole.task, torch.cat([h.task for h in halves]))  # per sample: batch-invariant
    assert torch.allclose(whole.logits, torch.cat([h.logits for h in halves]), atol=1e-5)
    ents = []
    for t, (a, b) in enumerate(strategy._ranges()):
        logits, _ = strategy._under(x, t)
        ents.append(entropy(logits[:, a:b]))
    assert torch.equal(whole.task, torch.stack(ents).argmin(0))
    # the prediction comes from the inferred task's classes only
    for i, t in enumerate(whole.task.tolist()):
        a, b = strategy._ranges()[t]
        assert a <= int(whole.logits[i].argmax()) < b


def test_oneshot_and_batch_scope(lenet_scenario):
    strategy = trained_supsup(lenet_scenario, task_inference="oneshot")
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        whole = strategy.predict(x)
        alone = torch.cat([strategy.predict(x[i:i + 1]).task for i in range(6)])
    assert torch.equal(whole.task, alone)  # the per-sample gradients do not mix samples
    g = strategy._oneshot_gradients(x)
    assert g.shape == (3, 6) and torch.equal(whole.task, g.argmin(0))
    strategy.inference_scope = "batch"
    with torch.no_grad():
        batch = strategy.predict(x)
    assert len(set(batch.task.tolist())) == 1


def test_kkt_copies_the_best_earlier_mask_and_clamps_k(lenet_scenario):
    options = {"kkt": "always", "kkt_k": 10_000, "kkt_fraction": 1.0}
    stream, model, pet, strategy, _ = build(resolve(lenet_scenario, strategy="exssnet", pet="supermask",
                                                    overrides={"options": options, "train": {"epochs": 1}}))
    at_start = {}
    start_phase = strategy.start_phase

    def spy():  # the new mask's scores right after KKT, before its first step
        start_phase()
        if strategy.phase.name == "mask" and len(strategy.tasks) == 2:
            at_start.update(pet.state_dict("task1"))

    strategy.start_phase = spy
    strategy.train(stream.train_stream[0])
    strategy.train(stream.train_stream[1])
    entry = strategy.record["kkt"][0]
    assert entry["sources"] == [0] and entry["k"] < 10_000  # clamped to the kNN train points
    assert at_start and all(torch.equal(v, pet.state_dict("task0")[k]) for k, v in at_start.items())


def test_knn_accuracy_hand_case():
    train = torch.tensor([[0.0], [0.1], [5.0], [5.1]])
    labels = torch.tensor([0, 0, 1, 1])
    assert knn_accuracy(train, labels, torch.tensor([[0.05], [4.9]]), torch.tensor([0, 1]), k=1) == 1.0
    assert knn_accuracy(train, labels, torch.tensor([[0.05], [4.9]]), torch.tensor([1, 1]), k=1) == 0.5
    assert math.isclose(entropy(torch.zeros(1, 4)).item(), math.log(4), rel_tol=1e-6)


def test_bad_exssnet_settings_fail_clearly(lenet_scenario):
    with pytest.raises(ClpeftError, match="--pet supermask"):
        build(resolve(lenet_scenario, strategy="exssnet"))
    for options, match in [({"weight_epochs": 2}, "supsup trains masks only"), ({"kkt": "nearest"}, "options.kkt must be one of"),
                           ({"task_inference": "oracle"}, "options.task_inference must be one of"),
                           ({"kkt_k": 0}, "options.kkt_k must be ≥ 1")]:
        with pytest.raises(ClpeftError, match=match):
            build(resolve(lenet_scenario, strategy="supsup", pet="supermask", overrides={"options": options}))


def test_pack_bits_round_trips_any_shape():
    from clpeft.pet.supermask import pack_bits, unpack_bits

    g = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5), (4, 3, 2, 2)]:
        mask = torch.rand(shape, generator=g) < 0.3
        packed = pack_bits(mask)
        assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(mask.numel() / 8)
        assert torch.equal(unpack_bits(packed, mask.shape), mask)


@pytest.mark.parametrize("name", ["exssnet", "supsup"])
def test_masks_kept_as_bits_give_the_same_run_in_a_fraction_of_the_state_and_resume(tmp_path, lenet_scenario, name):
    """keep_scores: false stores a finished mask as packed bits and drops its scores: the same accuracy matrix, a
    checkpoint state about 1/40 as large per mask, and a resumed run that ends byte-identical to one that never
    stopped."""
    from clpeft.checkpoint import load_checkpoint
    from test_resume import Crash, crash_after

    sizes, results = {}, {}
    for keep in (True, False):
        config = resolve(lenet_scenario, strategy=name, pet="supermask",
                         overrides={"pet": {"keep_scores": keep}, "stream": {"n_experiences": 3}})
        masks = {}

        def probe(i, strategy, stream):
            masks[i] = {n: layer.frozen_mask(strategy.tasks[i]).clone() for n, layer in strategy.layers.items()}
            sizes[keep] = sum(v.numel() * v.element_size() for k, v in strategy.pet.state_dict().items())

        results[keep] = run(config, out_dir=tmp_path / f"{keep}", after_experience=probe)
        if not keep:  # a resumed run loads packed masks into a fresh model
            with pytest.raises(Crash):
                run(config, out_dir=tmp_path / "crashed", after_experience=crash_after(1))
            assert load_checkpoint(tmp_path / "crashed", config.run_id)["experience"] == 0
            run(config, out_dir=tmp_path / "crashed", resume=True)
            assert (tmp_path / "crashed" / "results.json").read_bytes() == (tmp_path / "False" / "results.json").read_bytes()
        else:
            kept_masks = masks
    assert results[True]["accuracy_matrix"] == results[False]["accuracy_matrix"]
    assert all(torch.equal(kept_masks[i][n], m) for i in masks for n, m in masks[i].items())
    assert sizes[False] * 20 < sizes[True]


def test_kkt_needs_the_scores_a_bits_only_mask_drops(lenet_scenario):
    with pytest.raises(ClpeftError, match="keep_scores: false drops"):
        build(resolve(lenet_scenario, strategy="exssnet", pet="supermask",
                      overrides={"pet": {"keep_scores": False}, "options": {"kkt": "always"}}))
