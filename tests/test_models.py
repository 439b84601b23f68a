"""Backbones (timm by name, file weights through timm, safe local checkpoints, offline EfficientNet) and the head."""
import pickle

import pytest
import torch

from clpeft.errors import ClpeftError
from clpeft.models import IncrementalHead, build_model, create_backbone
from clpeft.models.backbones import BACKBONES, WEIGHTS_DIR, efficientnet_lite0_file, sha256_of
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.streams.datasets import InputSpec


def test_head_grows_by_appending_and_masks_unseen_classes():
    head = IncrementalHead(8, 6)
    first = head.ensure_classes(2)[0]
    out = head(torch.randn(3, 8))
    assert out.shape == (3, 6) and (out[:, 2:] == UNSEEN_LOGIT).all()
    head.ensure_classes(5)
    assert head.chunks[0] is first and head.num_seen == 5
    head.eval()

    class Exp:
        classes_in_this_experience = [5]

    head.adaptation(Exp())
    assert head.num_seen == 5, "the head must not grow during evaluation"
    head.train()
    head.adaptation(Exp())
    assert head.num_seen == 6


def test_timm_file_weights_load_through_pretrained_cfg_overlay(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    net, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    spec = BACKBONES["vit_tiny_fmnist"]
    monkeypatch.setattr("clpeft.models.backbones.WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(BACKBONES, "vit_tiny_fmnist", type(spec)(**{**spec.__dict__, "weights": "file:w.safetensors"}))
    loaded, _ = create_backbone("vit_tiny_fmnist", pretrained=True)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_bundled_vit_weights_match_their_sha256_and_load():
    weights = WEIGHTS_DIR / "vit_tiny_fmnist.safetensors"
    recorded = (WEIGHTS_DIR / "vit_tiny_fmnist.safetensors.sha256").read_text().split()[0]
    assert sha256_of(weights) == recorded
    assert weights.stat().st_size <= 15 * 2**20
    pretrained, _ = create_backbone("vit_tiny_fmnist", pretrained=True)
    scratch, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False)
    assert not torch.equal(pretrained.blocks[0].attn.qkv.weight, scratch.blocks[0].attn.qkv.weight)


def test_local_checkpoint_is_loaded_safely_and_checked(tmp_path):
    net, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False)
    good = tmp_path / "good.pth"
    torch.save(net.state_dict(), good)
    other, _ = create_backbone("vit_tiny_fmnist_scratch", pretrained=False, checkpoint=good)
    assert torch.equal(other.cls_token, net.cls_token)
    wrong = tmp_path / "wrong.pth"
    torch.save({**net.state_dict(), "cls_token": torch.zeros(1, 1, 7)}, wrong)
    with pytest.raises(ClpeftError, match="shape"):
        create_backbone("vit_tiny_fmnist_scratch", pretrained=False, checkpoint=wrong)

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(ClpeftError, match="weights_only=True"):
        create_backbone("vit_tiny_fmnist_scratch", pretrained=False, checkpoint=evil)
    with pytest.raises(ClpeftError, match="does not exist"):
        create_backbone("vit_tiny_fmnist_scratch", pretrained=False, checkpoint=tmp_path / "none.pth")


def test_offline_efficientnet_lite0_loads_the_package_weights_by_position():
    net, spec = create_backbone("efficientnet_lite0", pretrained=True)
    state = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    assert torch.equal(net.conv_stem.weight, state["_conv_stem.weight"])
    assert spec.mean == (0.5, 0.5, 0.5) and net.num_features == 1280


def test_hub_weights_offline_fail_with_a_clear_message(monkeypatch):
    import timm

    def no_network(*a, **k):
        raise OSError("Name or service not known")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ClpeftError, match="go online"):
        create_backbone("vit_base_patch16_224", pretrained=True)
    with pytest.raises(ClpeftError, match="unknown backbone"):
        create_backbone("vit_gigantic_patch99", pretrained=False)


def test_input_adapter_fits_small_gray_images_to_the_backbone():
    model = build_model("efficientnet_lite0", 10, InputSpec(channels=1, size=8), pretrained=False)
    x = torch.rand(2, 1, 8, 8)
    adapted = model.adapter(x)
    assert adapted.shape == (2, 3, 224, 224) and adapted.min() >= -1 and adapted.max() <= 1


def test_prototype_contrastive_is_the_cross_entropy_of_each_row_against_itself():
    import math

    from clpeft.losses import prototype_contrastive

    g = torch.Generator().manual_seed(0)
    feats, means = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g)
    rows = torch.cat([means, feats])
    want = 0.0
    for i in range(5):  # by hand: −log softmax of row i's similarities at column i
        sims = [float(rows[i] @ rows[j]) / 0.8 for j in range(5)]
        top = max(sims)
        want += -(sims[i] - top - math.log(sum(math.exp(s - top) for s in sims)))
    assert abs(float(prototype_contrastive(feats, means, 0.8)) - want / 5) < 1e-5
    only = torch.cat([feats])
    assert torch.allclose(prototype_contrastive(feats, None), prototype_contrastive(only, torch.empty(0, 4)))
    feats.requires_grad_(True)
    means.requires_grad_(True)
    prototype_contrastive(feats, means).backward()
    assert means.grad is None and feats.grad is not None  # the stored means are constants
