"""PET layer: output preservation at init, exact switch-off, frozen base, LAE parameter counts,
LoRA merge, save/load, per-sample bank mixing, fused vs manual prefix attention, supermasks."""
import copy

import pytest
import timm
import torch
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.pet.supermask import SupermaskLayer, TaskNormLayer
from clpeft.pet import (AdapterConfig, LoRAConfig, PrefixConfig, PromptConfig, SupermaskConfig, inject_named_pet,
                        inject_pet)

torch.manual_seed(0)

VIT_VARIANTS = {
    "vit_tiny": dict(name="vit_tiny_patch16_224", img_size=32, patch_size=8),
    "vit_small": dict(name="vit_small_patch16_224", img_size=32, patch_size=16, depth=5),
    "deit_no_qkv_bias": dict(name="deit_tiny_patch16_224", img_size=32, patch_size=8, qkv_bias=False, depth=5),
}


def make_vit(variant="vit_tiny", fused=True, **extra):
    kw = dict(VIT_VARIANTS[variant])
    name = kw.pop("name")
    model = timm.create_model(name, pretrained=False, num_classes=0, **{**kw, **extra})
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused
    return model.eval()


def make_effnet():
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0).eval()


def make_bert():
    import transformers  # part of the test extra: the BERT path is always tested

    cfg = transformers.BertConfig(hidden_size=64, num_hidden_layers=5, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=100, max_position_embeddings=32)
    return transformers.BertModel(cfg).eval()


def vit_input(batch=3):
    return torch.randn(batch, 3, 32, 32)


def outputs(model, x):
    with torch.no_grad():
        out = model(x) if not isinstance(x, dict) else model(**x).last_hidden_state
    return out


ADDITIVE = [AdapterConfig(), AdapterConfig(position="mlp"), LoRAConfig(), LoRAConfig(kv_only=False, alpha=8.0)]


@pytest.mark.parametrize("variant", list(VIT_VARIANTS))
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("config", ADDITIVE, ids=lambda c: f"{c.kind}-{getattr(c, 'position', '')}{getattr(c, 'kv_only', '')}")
def test_additive_pet_at_init_leaves_vit_outputs_unchanged(variant, fused, config):
    model = make_vit(variant, fused)
    x = vit_input()
    ref = outputs(model, x)
    inject_pet(model, copy.deepcopy(config))
    assert (outputs(model, x) - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("config", [AdapterConfig(blocks=(0, 3, 7)), LoRAConfig(blocks=(0, 5, 10))],
                         ids=["adapter", "lora"])
def test_additive_pet_at_init_leaves_efficientnet_outputs_unchanged(config):
    model = make_effnet()
    x = torch.randn(2, 3, 64, 64)
    ref = outputs(model, x)
    ctl = inject_pet(model, config)
    assert len(ctl.layers) >= 3
    assert (outputs(model, x) - ref).abs().max() <= 1e-6


@pytest.mark.parametrize("config", [AdapterConfig(), AdapterConfig(position="mlp"), LoRAConfig()], ids=["adapter", "adapter-mlp", "lora"])
def test_additive_pet_at_init_leaves_bert_outputs_unchanged(config):
    model = make_bert()
    x = dict(input_ids=torch.randint(0, 100, (2, 12)), attention_mask=torch.ones(2, 12, dtype=torch.long))
    ref = outputs(model, x)
    ctl = inject_pet(model, config)
    assert len(ctl.layers) >= 3
    assert (outputs(model, x) - ref).abs().max() <= 1e-6


def _randomize(ctl):
    with torch.no_grad():
        for p in ctl.parameters():
            p.normal_(0, 0.05)


@pytest.mark.parametrize("config", [AdapterConfig(), LoRAConfig(), PrefixConfig(), PromptConfig(), SupermaskConfig(sparsity_kept=0.5)],
                         ids=lambda c: c.kind)
def test_switched_off_pet_gives_frozen_model_exactly(config):
    model = make_vit()
    x = vit_input()
    ref = outputs(model, x)
    ctl = inject_pet(model, config)
    _randomize(ctl)
    assert not torch.equal(outputs(model, x), ref), "a trained PET must change the output"
    ctl.activate(None)
    assert torch.equal(outputs(model, x), ref)
    with ctl.using("default"):
        assert not torch.equal(outputs(model, x), ref)
    assert torch.equal(outputs(model, x), ref)


@pytest.mark.parametrize("config", [AdapterConfig(), LoRAConfig(), PrefixConfig(), PromptConfig()], ids=lambda c: c.kind)
def test_only_pet_parameters_train_and_backbone_bytes_stay(config):
    model = make_vit().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctl = inject_pet(model, config)
    pet_ids = {id(p) for p in ctl.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == pet_ids
    opt = torch.optim.Adam(trainable, lr=1e-2)
    pet_before = ctl.state_dict()
    model(vit_input()).pow(2).mean().backward()
    for p in model.parameters():
        assert (p.grad is not None) == (id(p) in pet_ids)
    opt.step()
    after = model.state_dict()
    for k, v in before.items():
        key = [n for n in after if n.replace(".base.", ".") == k]
        assert len(key) == 1 and torch.equal(after[key[0]], v), k
    assert any(not torch.equal(v, ctl.state_dict()[k]) for k, v in pet_before.items())


@pytest.mark.parametrize("kind,expected", [("adapter", 42_270), ("lora", 76_810), ("prefix", 76_810)])
def test_lae_parameter_counts_on_vit_base(kind, expected):
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    ctl = inject_named_pet(model, kind)
    assert ctl.num_parameters() == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("fused", [True, False])
def test_lora_merged_equals_unmerged_and_unmerge_restores(fused):
    model = make_vit(fused=fused)
    x = vit_input()
    ref = outputs(model, x)
    ctl = inject_pet(model, LoRAConfig(blocks=None))
    _randomize(ctl)
    unmerged = outputs(model, x)
    ctl.merge()
    merged = outputs(model, x)
    assert torch.allclose(merged, unmerged, atol=1e-5, rtol=1e-5)
    ctl.unmerge()
    assert torch.equal(outputs(model, x), unmerged)
    ctl.activate(None)
    assert torch.equal(outputs(model, x), ref)


def test_lora_merge_on_conv_equals_unmerged():
    model = make_effnet()
    x = torch.randn(2, 3, 64, 64)
    ctl = inject_pet(model, LoRAConfig(blocks=(1, 4)))
    _randomize(ctl)
    unmerged = outputs(model, x)
    ctl.merge()
    assert torch.allclose(outputs(model, x), unmerged, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", [AdapterConfig(), LoRAConfig(), PrefixConfig(), PromptConfig(), SupermaskConfig()],
                         ids=lambda c: c.kind)
def test_saved_and_reloaded_pet_state_gives_identical_outputs(tmp_path, config):
    torch.manual_seed(1)
    model = make_vit()
    ctl = inject_pet(model, copy.deepcopy(config))
    _randomize(ctl)
    x = vit_input()
    expected = outputs(model, x)
    ctl.save(tmp_path / "pet.safetensors")
    torch.manual_seed(2)
    fresh = make_vit()
    fresh.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items()
                           if ".instances." not in k and "value" not in k.split(".")[-1]}, strict=False)
    fresh_ctl = inject_pet(fresh, copy.deepcopy(config))
    fresh_ctl.load(tmp_path / "pet.safetensors")
    assert torch.equal(outputs(fresh, x), expected)


def test_loading_pet_state_of_another_config_fails_clearly(tmp_path):
    ctl = inject_pet(make_vit(), LoRAConfig(rank=4))
    ctl.save(tmp_path / "a.safetensors")
    other = inject_pet(make_vit(), LoRAConfig(rank=2))
    with pytest.raises(ClpeftError, match="shape"):
        other.load(tmp_path / "a.safetensors")


@pytest.mark.parametrize("config", [AdapterConfig(), LoRAConfig(), PrefixConfig(), PromptConfig()], ids=lambda c: c.kind)
def test_per_sample_bank_mixing_equals_each_sample_alone(config):
    torch.manual_seed(3)
    model = make_vit()
    ctl = inject_pet(model, config, name="e0")
    for n in ("e1", "e2"):
        ctl.add(n)
    _randomize_all = [ctl.parameters(n) for n in ctl.names]
    with torch.no_grad():
        for params in _randomize_all:
            for p in params:
                p.normal_(0, 0.05)
    x = vit_input(4)
    w = torch.softmax(torch.randn(4, 3), dim=1)
    with ctl.mixing(ctl.names, w):
        batched = outputs(model, x)
    for b in range(4):
        with ctl.mixing(ctl.names, w[b:b + 1]):
            alone = outputs(model, x[b:b + 1])
        assert torch.allclose(batched[b:b + 1], alone, atol=1e-5)
    # a one-hot mixture is exactly that instance
    with ctl.mixing(ctl.names, torch.tensor([[0.0, 1.0, 0.0]]).repeat(4, 1)):
        onehot = outputs(model, x)
    with ctl.using("e1"):
        single = outputs(model, x)
    assert torch.allclose(onehot, single, atol=1e-5)


def test_lora_bank_mixture_equals_merged_mixture_weight():
    torch.manual_seed(4)
    model = make_vit()
    ctl = inject_pet(model, LoRAConfig(), name="a")
    ctl.add("b")
    with torch.no_grad():
        for n in ctl.names:
            for p in ctl.parameters(n):
                p.normal_(0, 0.05)
    x = vit_input(2)
    w = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    with ctl.mixing(["a", "b"], w):
        mixed = outputs(model, x)
    for b in range(2):
        merged = copy.deepcopy(model)
        with torch.no_grad():
            for name, layer in merged.named_modules():
                if hasattr(layer, "merge") and hasattr(layer, "slices"):
                    for i, (s, e) in enumerate(layer.slices):
                        for k, n in enumerate(["a", "b"]):
                            inst = layer.instances[n]
                            layer.base.weight[s:e] += w[b, k] * inst.scales[i]() * inst.lora_B[i] @ inst.lora_A[i]
            for m in merged.modules():
                if hasattr(m, "routing"):
                    m.routing.active = None
        assert torch.allclose(mixed[b], outputs(merged, x[b:b + 1])[0], atol=1e-5)


@pytest.mark.parametrize("compensatory", [True, False])
def test_prefix_fused_attention_equals_manual(compensatory):
    torch.manual_seed(5)
    fused, manual = make_vit(fused=True), make_vit(fused=False)
    manual.load_state_dict(fused.state_dict())
    c1 = inject_pet(fused, PrefixConfig(compensatory=compensatory))
    c2 = inject_pet(manual, PrefixConfig(compensatory=compensatory))
    _randomize(c1)
    c2.load_state_dict(c1.state_dict())
    x = vit_input()
    assert torch.allclose(outputs(fused, x), outputs(manual, x), atol=1e-5)


def test_prefix_calibration_matches_direct_formula():
    """out_i = (1 − λ_i)·Attn_orig(i) + Attn_prefix(i), computed by hand on one attention layer."""
    torch.manual_seed(6)
    model = make_vit(depth=5)
    attn = model.blocks[0].attn
    ctl = inject_pet(model, PrefixConfig(blocks=(0,), length=3))
    _randomize(ctl)
    layer = model.blocks[0].attn
    x = torch.randn(2, 5, attn.qkv.in_features)
    with torch.no_grad():
        got = layer(x)
        q, k, v = attn.qkv(x).reshape(2, 5, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        inst = layer.instances["default"]
        pk = (inst.key()).reshape(1, 3, attn.num_heads, attn.head_dim).transpose(1, 2)
        pv = (inst.value()).reshape(1, 3, attn.num_heads, attn.head_dim).transpose(1, 2)
        so = (q @ k.transpose(-1, -2)) * attn.scale
        sp = (q @ pk.transpose(-1, -2)) * attn.scale
        lam = torch.exp(torch.logsumexp(sp, -1) - torch.logsumexp(torch.cat([so, sp], -1), -1)).unsqueeze(-1)
        out = (1 - lam) * (so.softmax(-1) @ v) + sp.softmax(-1) @ pv
        ref = attn.proj(out.transpose(1, 2).reshape(2, 5, -1))
    assert torch.allclose(got, ref, atol=1e-5)


def test_prefix_and_lora_compose_on_one_attention():
    model = make_vit()
    x = vit_input()
    lora = inject_pet(model, LoRAConfig())
    prefix = inject_pet(model, PrefixConfig())
    _randomize(lora)
    _randomize(prefix)
    both = outputs(model, x)
    lora.activate(None)
    only_prefix = outputs(model, x)
    assert not torch.equal(both, only_prefix)
    assert {id(p) for p in model.parameters() if p.requires_grad} == {id(p) for p in lora.parameters() + prefix.parameters()}


def test_supermask_keeps_the_top_fraction_per_layer_with_straight_through_gradient():
    layer_model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4))
    ctl = inject_pet(layer_model, SupermaskConfig(sparsity_kept=0.3))
    for target, layer in ctl.layers.items():
        mask = layer.mask("default")
        assert mask.sum().item() == mask.numel() - int(0.7 * mask.numel())
        scores = layer.instances["default"].scores.abs()
        assert scores[mask.bool()].min() >= scores[~mask.bool()].max()
    x = torch.randn(5, 20)
    layer_model(x).sum().backward()
    first = ctl.layers["0"]
    assert first.instances["default"].scores.grad is not None
    assert first.base.weight.grad is None  # frozen base
    # gradient w.r.t. scores = dL/dw_eff ⊙ weight ⊙ sign(scores), straight through the top-k
    assert (first.instances["default"].scores.grad != 0).sum() > 0


def test_supermask_top_k_drops_exactly_the_share_asked_even_with_ties():
    from clpeft.pet.supermask import TopKMask

    magnitudes = torch.tensor([[0.5, 0.1, 0.5, 0.5], [0.2, 0.5, 0.9, 0.0]])
    mask = TopKMask.apply(magnitudes, 0.5)  # drop 4 of 8; four entries tie at 0.5
    assert int(mask.sum()) == 4 and mask[1, 2] == 1 and mask[0, 1] == 0 and mask[1, 3] == 0
    assert magnitudes[mask.bool()].min() >= magnitudes[~mask.bool()].max()
    assert torch.equal(TopKMask.apply(magnitudes, 1.0), torch.ones_like(magnitudes))


def test_supermask_on_conv_and_signed_constant_init():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    ctl = inject_pet(conv, SupermaskConfig(sparsity_kept=0.5, signed_constant=True))
    w = ctl.layers["0"].base.weight
    assert torch.allclose(w.abs(), torch.full_like(w, (2.0 / 27) ** 0.5))
    ctl.add("task1")
    a, b = outputs_under(ctl, conv, torch.randn(2, 3, 6, 6), ["default", "task1"])
    assert not torch.equal(a, b)


def outputs_under(ctl, model, x, names):
    """The model's output with each named instance active in turn."""
    outs = []
    for name in names:
        with ctl.using(name):
            outs.append(model(x))
    return outs


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)),
    lambda: make_effnet(),  # timm's BatchNormAct2d (activation inside the norm layer)
    lambda: timm.create_model("resnet18", pretrained=False, num_classes=0),  # ResNet-18 (stock timm)
])
def test_supermask_keeps_batchnorm_statistics_per_task(make):
    torch.manual_seed(0)
    model = make()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    ctl = inject_pet(model, SupermaskConfig(sparsity_kept=0.5))
    ctl.add("task1")
    norms = [layer for layer in ctl.layers.values() if isinstance(layer, TaskNormLayer)]
    assert len(norms) == n_bn > 0  # every BatchNorm gets per-task statistics
    before = [layer.instances["default"].running_mean.clone() for layer in norms]
    model.train()
    with ctl.using("task1"):
        model(torch.randn(4, 3, 32, 32) * 3 + 1)  # only task1's statistics may move
    assert all(torch.equal(layer.instances["default"].running_mean, b) for layer, b in zip(norms, before))
    assert any(not torch.equal(layer.instances["task1"].running_mean, b) for layer, b in zip(norms, before))
    model.eval()
    a, b = outputs_under(ctl, model, torch.randn(2, 3, 32, 32), ["default", "task1"])
    assert torch.isfinite(a).all() and not torch.allclose(a, b)


def test_supermask_superposition_with_one_hot_weights_equals_each_mask():
    """Bank mode mixes per-sample outputs of each mask (SupSup's superposition): one-hot rows = that mask."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    model(torch.randn(1, 3, 6, 6))
    ctl = inject_pet(model, SupermaskConfig(sparsity_kept=0.4))
    ctl.add("task1")
    model.eval()
    x = torch.randn(3, 3, 6, 6)
    a, b = outputs_under(ctl, model, x, ["default", "task1"])
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    with ctl.mixing(["default", "task1"], weights):
        mixed = model(x)
    assert torch.allclose(mixed, torch.stack([a[0], b[1], a[2]]), atol=1e-6)
    for layer in ctl.layers.values():  # a cached mask gives the same forward as the live top-k
        if isinstance(layer, SupermaskLayer):
            live = layer.mask("task1").clone()
            layer.freeze("task1")
            assert torch.equal(layer.mask("task1"), live)


@pytest.mark.parametrize("bad,match", [
    (lambda: inject_pet(make_effnet(), PrefixConfig()), "needs a timm ViT"),
    (lambda: inject_pet(make_vit(), AdapterConfig(blocks=(99,))), "does not exist"),
    (lambda: inject_pet(make_vit(), LoRAConfig(targets=["nothing.*"])), "no module matches"),
    (lambda: inject_named_pet(make_vit(), "lora", {"rnk": 3}), "unknown lora setting .rnk."),
    (lambda: inject_named_pet(make_vit(), "ia3"), "unknown PET module"),
])
def test_bad_pet_requests_fail_with_a_clear_error(bad, match):
    with pytest.raises(ClpeftError, match=match):
        bad()


def test_targets_by_pattern_like_peft():
    model = make_vit()
    ctl = inject_pet(model, LoRAConfig(targets=["blocks.*.mlp.fc1"]))
    assert set(ctl.layers) == {f"blocks.{i}.mlp.fc1" for i in range(len(model.blocks))}


def test_bank_of_many_instances_has_independent_parameters():
    model = make_vit()
    ctl = inject_pet(model, AdapterConfig(), name="online")
    ctl.add("offline", copy_from="online")
    a, b = ctl.state_dict("online"), ctl.state_dict("offline")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not {id(p) for p in ctl.parameters("online")} & {id(p) for p in ctl.parameters("offline")}


def test_adaptformer_adapter_sits_beside_the_mlp_fed_the_residual_stream():
    """position mlp_residual: block(x) = x' + mlp(norm2(x')) + s·up(dropout(ReLU(down(x')))) with x' the
    residual stream after attention (AdaptFormer, as APER and RanPAC use it)."""
    model = make_vit()
    x = vit_input()
    ref = outputs(model, x)
    ctl = inject_pet(model, AdapterConfig(blocks=(1,), position="mlp_residual", bottleneck=4, activation="relu",
                                          dropout=0.1, scale=0.1))
    model.eval()  # the new instance is created in training mode
    assert torch.equal(outputs(model, x), ref)  # up is zero at init
    _randomize(ctl)
    block = model.blocks[1]
    inst = ctl.layers["blocks.1.mlp"].instances["default"]
    with torch.no_grad():
        h = model.blocks[0](model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))))
        mid = h + block.attn(block.norm1(h))
        adapt = 0.1 * inst.up(torch.relu(inst.down(mid)))
        expected = mid + block.mlp.base(block.norm2(mid)) + adapt
        assert torch.allclose(block(h), expected, atol=1e-5)
    model.train()
    a, b = model(x), model(x)
    assert not torch.equal(a, b)  # dropout acts while training


def test_every_shipped_scenario_resolves_for_each_of_its_strategies():
    from clpeft.config import SCENARIOS_DIR, load_scenario, resolve
    from clpeft.strategies import get_strategy

    for path in sorted(SCENARIOS_DIR.glob("*.yaml")):
        scenario = load_scenario(str(path))
        for strategy in list(scenario.get("strategies") or {}) or [scenario.get("strategy", "finetune")]:
            cls = get_strategy(strategy)
            own = (scenario["strategies"].get(strategy) or {}).get("pet") if scenario.get("strategies") else None
            pet = None if own or not cls.requires_pet else cls.accepts_pet[0]  # as `clpeft run … --pet KIND`
            config = resolve(scenario, strategy=strategy, pet=pet)
            assert config.strategy == strategy, path.name


@pytest.mark.parametrize("config", [AdapterConfig(position="mlp_residual", activation="relu", scale=0.1, blocks=[2, 3]),
                                    LoRAConfig(blocks=[1, 2, 3])], ids=["adapter", "lora"])
def test_multi_pass_features_equal_running_each_instance_alone(config):
    from clpeft.pet.multipass import MultiPassFeatures

    torch.manual_seed(4)
    model = make_vit()
    ctl = inject_pet(model, config, name="t0")
    for n in ("t1", "t2", "t3"):
        ctl.add(n)
    _randomize(ctl)
    passes = MultiPassFeatures(model, ctl)
    assert passes.shared.first_block == config.blocks[0]  # the stock blocks before it run once
    x = vit_input(5)
    alone = []
    for n in ctl.names:
        with ctl.using(n):
            alone.append(outputs(model, x))
    alone = torch.stack(alone, 1)
    with torch.no_grad():
        for kwargs in ({}, {"batched": True}, {"batched": True, "chunk": 3}):
            features = passes(x, ctl.names, **kwargs)
            assert features.shape == (5, 4, alone.shape[-1])
            assert torch.allclose(features, alone, atol=1e-5), kwargs
        reordered = passes(x, ["t2", "t0"], batched=True)
    assert torch.allclose(reordered, alone[:, [2, 0]], atol=1e-5)


def test_average_into_pulls_an_instance_toward_the_mean_of_others():
    torch.manual_seed(5)
    ctl = inject_pet(make_vit(), AdapterConfig(), name="a")
    for n in ("b", "c"):
        ctl.add(n)
    _randomize(ctl)
    before = {n: {k: v.clone() for k, v in ctl.named_parameters(n).items()} for n in ctl.names}
    ctl.average_into("c", ["a", "b"], momentum=0.9)
    for key, value in ctl.named_parameters("c").items():
        expected = 0.9 * before["c"][key] + 0.1 * (before["a"][key] + before["b"][key]) / 2
        assert torch.allclose(value, expected, atol=1e-7)
        assert torch.equal(ctl.named_parameters("a")[key], before["a"][key])  # the sources do not move
    with pytest.raises(ClpeftError, match="momentum"):
        ctl.average_into("c", ["a"], momentum=1.5)


def test_multipass_enters_a_context_around_each_instance_and_refuses_it_batched():
    from contextlib import contextmanager

    from clpeft.pet.multipass import MultiPassFeatures

    model = make_vit()
    pet = inject_pet(model, AdapterConfig(bottleneck=4), name="a")
    pet.add("b")
    entered = []

    @contextmanager
    def around(name):
        entered.append((name, pet.active))
        yield

    passes = MultiPassFeatures(model, pet)
    x = vit_input(2)
    with torch.no_grad():
        out = passes(x, ["b", "a"], around=around)
    assert out.shape[:2] == (2, 2) and entered == [("b", "b"), ("a", "a")]
    with pytest.raises(ClpeftError, match="one after another"):
        passes(x, ["a", "b"], batched=True, around=around)
