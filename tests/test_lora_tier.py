"""The LoRA tier: LoRA on chosen slices of a fused qkv, unit-direction instances weighted by learned magnitudes,
InfLoRA (designed A in the complement of the remembered input subspace, only B trains) and SD-LoRA (old LoRAs as
directions, magnitudes train and restart at 0.8)."""
import pytest
import torch

from clpeft.config import resolve
from clpeft.errors import ClpeftError
from clpeft.pet import inject_pet
from clpeft.pet.config import pet_config
from clpeft.pet.subspace import InputGram
from clpeft.run import build


def tiny_vit():
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                             depth=2).eval()


@pytest.mark.parametrize("parts", ["qv", "kv", "qkv", "k"])
def test_lora_parts_adapt_exactly_the_named_slices_of_the_fused_qkv(parts):
    torch.manual_seed(0)
    net = tiny_vit()
    pet = inject_pet(net, pet_config("lora", {"parts": parts, "rank": 2, "alpha": 2.0, "blocks": None}))
    layer = pet.layers["blocks.0.attn.qkv"]
    d = layer.base.out_features // 3
    assert layer.slices == [("qkv".index(p) * d, ("qkv".index(p) + 1) * d) for p in parts]
    for b in layer.instances["default"].lora_B:
        torch.nn.init.normal_(b)
    x = torch.randn(2, 5, layer.in_features)
    delta = layer(x) - layer.base(x)
    for k, part in enumerate("qkv"):
        block = delta[..., k * d:(k + 1) * d]
        assert (block.abs().max() > 0) == (part in parts), part
    assert pet_config("lora", {}).as_dict() == {"blocks": (0, 1, 2, 3, 4), "targets": None, "rank": 5, "alpha": None,
                                                 "kv_only": True}  # unset parts leaves earlier run ids unchanged
    with pytest.raises(ClpeftError, match="pets.lora.parts must name some of q, k, v once each"):
        pet_config("lora", {"parts": "qq"})


@torch.no_grad()
def test_direction_only_instances_are_normalised_and_scaled_by_their_mixture_weight():
    torch.manual_seed(0)
    net = tiny_vit()
    pet = inject_pet(net, pet_config("lora", {"parts": "qv", "rank": 2, "alpha": 2.0, "blocks": None}), name="a")
    pet.add("b")
    layer = pet.layers["blocks.1.attn.qkv"]
    for name in ("a", "b"):
        for b in layer.instances[name].lora_B:
            torch.nn.init.normal_(b)
    layer.instances["a"].direction_only = True
    weights = torch.tensor([[0.7, 1.3]])
    x = torch.randn(3, 4, layer.in_features)
    with pet.mixing(["a", "b"], weights):
        got = layer(x) - layer.base(x)
    expected = torch.zeros_like(got)
    for i, (start, end) in enumerate(layer.slices):
        a, b = layer.instances["a"], layer.instances["b"]
        unit = a.lora_B[i] @ a.lora_A[i] / (a.lora_B[i].norm() * a.lora_A[i].norm())
        assert torch.allclose(a.delta_weights()[i], unit, atol=1e-6)  # normalised by the product of the norms
        expected[..., start:end] = x @ (0.7 * unit + 1.3 * b.lora_B[i] @ b.lora_A[i]).T
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.fixture
def lora_scenario(fast_scenario):
    fast_scenario["stream"] = {"dataset": "digits", "n_experiences": 3, "first_experience_classes": 4}
    fast_scenario["train"].update(epochs=1, lr=0.01)
    fast_scenario["strategies"] = {
        "inflora": {"pet": "lora", "pet_settings": {"blocks": None, "parts": "kv", "rank": 3, "alpha": 3.0}},
        "sd_lora": {"pet": "lora", "pet_settings": {"blocks": None, "parts": "qv", "rank": 3, "alpha": 3.0}}}
    return fast_scenario


def base_weights(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items() if ".instances." not in k}


def test_inflora_designs_a_in_the_complement_of_the_remembered_subspace_and_trains_only_b(lora_scenario):
    stream, model, pet, s, _ = build(resolve(lora_scenario, strategy="inflora"))
    base = base_weights(model)
    s.train(stream.train_stream[0])
    first = {k: v.clone() for k, v in pet.state_dict("e0").items()}
    assert any(k.endswith("lora_B.0") and v.abs().max() > 0 for k, v in first.items())  # B learned
    memory = [(b.clone(), kind) for b, kind in zip(s.memory.bases, s.memory.kinds)]
    assert len(memory) == len(pet.layers) and all(kind == "remove" for _, kind in memory)
    s.train(stream.train_stream[1])
    assert all(torch.equal(v, pet.state_dict("e0")[k]) for k, v in first.items())  # experience 0 frozen
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in base.items())  # no gradient to the backbone
    for (M, _), layer in zip(memory, pet.layers.values()):
        a_k, a_v = (a.detach().double() for a in layer.instances["e1"].lora_A)
        assert torch.equal(a_k, a_v)  # one A for K and V
        assert (a_k @ M).abs().max() < 1e-5 * a_k.abs().max()  # rows orthogonal to what experience 0 used
        assert torch.allclose(a_k @ a_k.T, torch.eye(3, dtype=torch.float64) / 3, atol=1e-5)  # scaled by 1/√3
    # measured on real inputs: experience 1's A barely responds to experience 0's inputs in the remembered span
    gram = InputGram(pet.layers)
    x = torch.stack([stream.train_stream[0].dataset[i][0] for i in range(32)])
    with gram.recording(), s._summed():
        model.features(x)
    for (M, _), C, layer in zip(memory, gram.grams(), pet.layers.values()):
        A = layer.instances["e1"].lora_A[0].detach().double()
        in_span = M @ (M.T @ C @ M) @ M.T
        assert torch.trace(A @ in_span @ A.T) < 1e-8 * torch.trace(in_span)
    trained = {id(p) for p in s.trainable_parameters()}
    assert trained == {id(p) for n, p in pet.named_parameters("e1").items() if ".lora_B." in n} | \
        {id(p) for p in model.head.chunks[-1].parameters()}


def test_sd_lora_old_loras_are_frozen_normalised_directions_and_the_magnitudes_train_then_restart(lora_scenario):
    stream, model, pet, s, _ = build(resolve(lora_scenario, strategy="sd_lora"))
    base = base_weights(model)
    s.train(stream.train_stream[0])
    first = {k: v.clone() for k, v in pet.state_dict("e0").items()}
    after_0 = s.magnitudes.detach().clone()
    assert after_0[0] != pytest.approx(0.8) and torch.all(after_0[1:] == 0.8)  # α_0 trained
    s.train(stream.train_stream[1])
    assert all(torch.equal(v, pet.state_dict("e0")[k]) for k, v in first.items())
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in base.items())
    layer = next(iter(pet.layers.values()))
    assert layer.instances["e0"].direction_only and not layer.instances["e1"].direction_only
    e0 = layer.instances["e0"]
    assert all(torch.allclose(w, b @ a / (b.norm() * a.norm()), atol=1e-6)
               for w, a, b in zip(e0.delta_weights(), e0.lora_A, e0.lora_B))
    after_1 = s.magnitudes.detach()
    # both magnitudes restarted at 0.8 when experience 1 began, then trained
    assert after_1[0] != pytest.approx(after_0[0]) and after_1[1] != pytest.approx(0.8)
    assert s.summary()["magnitude_reset"] is True


def test_sd_lora_can_carry_its_magnitudes_over(lora_scenario):
    lora_scenario["strategies"]["sd_lora"]["options"] = {"magnitude_reset": False}
    stream, model, pet, s, _ = build(resolve(lora_scenario, strategy="sd_lora"))
    s.train(stream.train_stream[0])
    learned = float(s.magnitudes[0])
    seen = []
    s.before_epoch = lambda: seen.append(float(s.magnitudes[0]))  # the value experience 1 starts from
    s.train(stream.train_stream[1])
    assert seen[0] == pytest.approx(learned) and seen[0] != pytest.approx(0.8)


@pytest.mark.parametrize("strategy,parts,expected", [
    ("inflora", "kv", 12 * 2 * 768 * 10 + 768 * 10 + 10),  # B_k, B_v of 12 blocks + the task's head: 192,010
    ("sd_lora", "qv", 12 * 2 * 2 * 768 * 10 + 10 + 768 * 10 + 10),  # A, B of Q and V (368,640) + 10 α + head
])
def test_trainable_parameters_per_experience_match_the_official_vit_b16_configurations(strategy, parts, expected):
    from clpeft.models.continual_model import build_model
    from clpeft.strategies import TrainSettings, get_strategy
    from clpeft.streams.datasets import InputSpec

    model = build_model("vit_base_patch16_224", 100, InputSpec(3, 224), pretrained=False)
    pet = inject_pet(model.backbone, pet_config("lora", {"parts": parts, "rank": 10, "alpha": 10.0, "blocks": None}))
    cls = get_strategy(strategy)
    s = cls(model=model, settings=TrainSettings(), device=torch.device("cpu"), pet=pet, n_experiences=10,
            options=cls.parse_options({}))
    pet.remove("default")
    pet.add("e0")
    s.names.append("e0")
    model.head.grow(10)
    assert sum(p.numel() for p in s.trainable_parameters()) == expected  # SD-LoRA: one magnitude per experience


@torch.no_grad()
@pytest.mark.parametrize("parts", ["qv", None])
def test_folding_instances_keeps_a_summed_banks_output_and_removes_them(parts):
    torch.manual_seed(0)
    net = tiny_vit()
    pet = inject_pet(net, pet_config("lora", {"parts": parts, "rank": 2, "alpha": 2.0, "blocks": None}), name="a")
    for name in ("b", "c"):
        pet.add(name)
    for layer in pet.layers.values():
        for name in ("a", "b", "c"):
            for b in layer.instances[name].lora_B:
                torch.nn.init.normal_(b, std=0.1)
        layer.instances["a"].direction_only = True
    x = torch.randn(2, 3, 32, 32)
    weights = torch.tensor([[0.7, 1.3, 0.4]])
    with pet.mixing(["a", "b", "c"], weights):
        before = net(x)
    pet.fold(["a", "b"], [0.7, 1.3])
    assert pet.names == ["c"] and all(set(layer.instances) == {"c"} for layer in pet.layers.values())
    with pet.mixing(["c"], weights[:, 2:]):
        after = net(x)
    assert torch.allclose(before, after, atol=1e-5) and not torch.equal(before, net(x))
    with pytest.raises(ClpeftError, match="one weight per instance"):
        pet.fold(["c"], [])
    adapter = inject_pet(tiny_vit(), pet_config("adapter", {"blocks": None}))
    with pytest.raises(ClpeftError, match="only LoRA instances can be folded"):
        adapter.fold(["default"], [1.0])


@pytest.mark.parametrize("strategy", ["inflora", "sd_lora"])
def test_a_bank_budget_folds_the_oldest_instances_with_their_weights_and_keeps_the_bank_at_its_cap(lora_scenario,
                                                                                                   strategy):
    lora_scenario["stream"] = {"dataset": "digits", "n_experiences": 4, "first_experience_classes": 4}
    lora_scenario["train"]["bank_budget"] = 2
    lora_scenario["strategies"]["sd_lora"]["options"] = {"magnitude_reset": False}
    config = resolve(lora_scenario, strategy=strategy)
    stream, model, pet, s, _ = build(config)
    x = torch.stack([stream.test_stream[0].dataset[i][0] for i in range(16)]).to(s.device)
    fold, add, checked = s.fold_over_budget, s.add_pet_instance, []

    def fold_spy(names, weights):  # the summed bank computes the same function before and after the fold
        if not names:
            checked.append((0, 0, []))
            return fold(names, weights)
        with torch.no_grad(), pet.mixing(names, torch.tensor([list(weights)])):
            before = model.features(x)
        kept = fold(names, weights)
        with torch.no_grad(), pet.mixing(kept, torch.tensor([list(weights)[len(names) - len(kept):]])):
            assert torch.allclose(model.features(x), before, atol=1e-5)
        checked.append((len(names), len(kept), list(weights)[len(names) - len(kept):]))
        return kept

    def add_spy(name):
        if strategy == "sd_lora" and checked and checked[-1][1] < checked[-1][0]:  # kept magnitudes moved up
            assert s.magnitudes[: checked[-1][1]].tolist() == pytest.approx(checked[-1][2])
        return add(name)

    s.fold_over_budget, s.add_pet_instance = fold_spy, add_spy
    base = base_weights(model)
    for i, experience in enumerate(stream.train_stream):
        s.train(experience)
        assert len(pet.names) == min(i + 1, 2) and s.names == pet.names == [f"e{j}" for j in range(max(0, i - 1), i + 1)]
    assert [(n, k) for n, k, _ in checked] == [(0, 0), (1, 1), (2, 1), (2, 1)]
    assert any(not torch.equal(v, model.backbone.state_dict()[k]) for k, v in base.items())  # folded into the base
    unbudgeted = dict(lora_scenario, train={**lora_scenario["train"], "bank_budget": None})
    assert config.config_hash() != resolve(unbudgeted, strategy=strategy).config_hash()


def test_a_bank_budget_is_refused_for_a_method_without_a_summed_bank(fast_scenario):
    fast_scenario["train"]["bank_budget"] = 3
    with pytest.raises(ClpeftError, match="finetune keeps no summed bank of instances, so train.bank_budget cannot "
                                          "cap it; drop it \\(it serves inflora, sd_lora\\)"):
        build(resolve(fast_scenario, strategy="finetune"))
