import warnings

import pytest

warnings.filterwarnings("ignore", module="avalanche")

# A fast scenario: digits, random-init tiny ViT (weights are tested separately), 1 epoch.
FAST_SCENARIO = {
    "name": "fast",
    "stream": {"dataset": "digits", "n_experiences": 3, "first_experience_classes": 4},
    "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
    "train": {"epochs": 1, "lr": 0.001, "batch_size": 64, "eval_batch_size": 256},
}


@pytest.fixture
def fast_scenario():
    import copy

    return copy.deepcopy(FAST_SCENARIO)


TOY_PLUGIN = """
import torch
from clpeft.models import BackboneSpec, register_backbone
from clpeft.streams import InputSpec, TensorImageDataset, register_dataset

@register_dataset("toy_blobs", num_classes=4, offline=True)
def load(**_):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat_interleave(30)
    x = torch.randn(120, 1, 8, 8, generator=g) * 0.3
    for k in range(4):  # each class a bright band of its own (blobs of one brightness per class: 0 vs 1 did not learn)
        x[y == k, :, 2 * k:2 * k + 2, :] += 2.0
    return TensorImageDataset(x[::2], y[::2].tolist()), TensorImageDataset(x[1::2], y[1::2].tolist()), InputSpec(1, 8)

register_backbone("toy_vit", BackboneSpec(timm_name="vit_tiny_patch16_224", input_size=8, in_chans=1, mean=(0.5,),
                  std=(0.5,), weights=None, kwargs=dict(img_size=8, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                                       in_chans=1)))
"""
TOY_SCENARIO = {"name": "toy", "stream": {"dataset": "toy_blobs", "n_experiences": 2},
                "model": {"backbone": "toy_vit", "pretrained": False}, "pets": {"adapter": {"blocks": [0, 1]}},
                "train": {"epochs": 3, "lr": 0.01, "batch_size": 16}}


@pytest.fixture(scope="session")
def toy_plugin(tmp_path_factory):
    """A user's data set (toy_blobs, 4 classes of 8x8 blobs) and backbone (toy_vit) in a plugin file (one file for
    the session: importing the same names from two files is refused, as it should be)."""
    path = tmp_path_factory.mktemp("plugin") / "toy.py"
    path.write_text(TOY_PLUGIN)
    return path
