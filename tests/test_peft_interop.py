"""peft interoperability: a peft LoraConfig becomes clpeft's LoRA (or a clear refusal), and clpeft's LoRA
instances load into peft as adapters computing the same function."""
import pytest
import timm
import torch

from clpeft.errors import ClpeftError
from clpeft.pet import LoRAConfig, inject_pet

peft = pytest.importorskip("peft", reason="peft is part of the test extra")


def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                             depth=3).eval()


def randomize(ctl):
    with torch.no_grad():
        for p in ctl.parameters():
            p.normal_(0, 0.05)


def test_a_peft_lora_config_is_translated_and_matches_peft_itself():
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc1"], lora_dropout=0.0)
    ours_model, theirs_model = vit(), vit()
    theirs_model.load_state_dict(ours_model.state_dict())
    ctl = inject_pet(ours_model, config)
    assert sorted(ctl.layers) == sorted(f"blocks.{i}.{m}" for i in range(3) for m in ("attn.qkv", "mlp.fc1"))
    assert isinstance(ctl.config, LoRAConfig) and ctl.config.rank == 4 and ctl.config.alpha == 8.0
    theirs = peft.get_peft_model(theirs_model, config)
    randomize(ctl)
    with torch.no_grad():  # give peft the same A and B, then compare the two models' outputs
        for target, layer in ctl.layers.items():
            mod = theirs.get_submodule(f"base_model.model.{target}")
            mod.lora_A["default"].weight.copy_(layer.instances["default"].lora_A[0])
            mod.lora_B["default"].weight.copy_(layer.instances["default"].lora_B[0])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours_model(x), theirs(x), atol=1e-5)


@pytest.mark.parametrize("field,value", [("lora_dropout", 0.1), ("use_dora", True), ("bias", "all"),
                                         ("layers_to_transform", [0]), ("init_lora_weights", "gaussian")])
def test_untranslatable_peft_settings_are_refused_by_name(field, value):
    config = peft.LoraConfig(r=4, target_modules=["qkv"], **{field: value})
    with pytest.raises(ClpeftError, match=f"LoraConfig.{field}=.* has no equivalent"):
        inject_pet(vit(), config)
    with pytest.raises(ClpeftError, match="regular expression cannot be translated"):
        inject_pet(vit(), peft.LoraConfig(r=4, target_modules=r".*qkv"))


@pytest.mark.parametrize("config", [LoRAConfig(blocks=(0, 2)), LoRAConfig(kv_only=False, alpha=8.0, blocks=(1,))],
                         ids=["lae-kv-slices-learnable-scales", "whole-qkv-fixed-alpha"])
def test_a_clpeft_lora_instance_loads_into_peft_with_the_same_outputs(tmp_path, config):
    model = vit()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    ctl = inject_pet(model, config)
    randomize(ctl)
    ctl.save_peft(tmp_path / "adapter", base_model_name_or_path="vit_tiny_patch16_224")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    fresh = vit()
    fresh.load_state_dict(base_state)
    loaded = peft.PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-5)
        ctl.activate(None)
        assert not torch.allclose(model(x), loaded(x), atol=1e-4)  # the adapter really acts
