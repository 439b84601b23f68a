"""The model every strategy trains: input adapter → stock backbone (PET inside) → incremental head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.models.backbones import BackboneSpec, create_backbone
from clpeft.models.heads import IncrementalHead
from clpeft.streams.datasets import InputSpec


class InputAdapter(nn.Module):
    """Fit stream images to the backbone on the device, batch-wise: resize, match channels, normalise.

    Keeping this in the model lets offline streams stay small in memory (8x8 or 28x28) while the
    backbone sees what it was pretrained on.
    """

    def __init__(self, data: InputSpec, spec: BackboneSpec, normalize: bool = True):
        super().__init__()
        self.size = spec.input_size
        self.resize = data.size != spec.input_size
        self.in_chans = spec.in_chans
        mean, std = (spec.mean, spec.std) if normalize else ((0.0,) * len(spec.mean), (1.0,) * len(spec.std))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if x.shape[1] != self.in_chans:
            x = x.mean(dim=1, keepdim=True) if self.in_chans == 1 else x.expand(-1, self.in_chans, -1, -1)
        return (x - self.mean) / self.std


class ContinualModel(nn.Module):
    """``head(backbone(adapter(x)))``; ``features`` is what prototype, LAME and KKT use."""

    def __init__(self, backbone: nn.Module, head: IncrementalHead, adapter: nn.Module | None = None,
                 spec: BackboneSpec | None = None):
        super().__init__()
        self.adapter = adapter if adapter is not None else nn.Identity()
        self.backbone = backbone
        self.head = head
        self.spec = spec
        self.extras = nn.ModuleDict()  # modules a method adds (e.g. a prompt pool's keys): saved and resumed with the model

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.adapter(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(backbone: str, num_classes: int, data: InputSpec, pretrained: bool = True,
                checkpoint: str | None = None, head_init_std: float | None = None, normalize: bool = True,
                input_size: int | None = None, mean=None, std=None, **kwargs) -> ContinualModel:
    """``normalize=False`` feeds [0, 1] pixels unnormalised (LAE's official quirk, kept as a named option);
    ``input_size``/``mean``/``std`` override what the built backbone expects. Text streams take a text
    backbone (``clpeft.models.text``), which tokenises the byte rows itself; ``kwargs`` go to the backbone."""
    from dataclasses import replace

    from clpeft.models.text import TEXT_BACKBONES, create_text_backbone

    if (data.modality == "text") != (backbone in TEXT_BACKBONES):
        raise ClpeftError(f"backbone {backbone} cannot read a {data.modality} stream; use "
                          + (f"one of {', '.join(TEXT_BACKBONES)}" if data.modality == "text" else "an image backbone"))
    if backbone in TEXT_BACKBONES:
        if checkpoint is not None:
            raise ClpeftError("--checkpoint is for image backbones; a text backbone loads its own weights package")
        net = create_text_backbone(backbone, pretrained=pretrained, **kwargs)
        return ContinualModel(net, IncrementalHead(net.num_features, num_classes, init_std=head_init_std))
    net, spec = create_backbone(backbone, pretrained=pretrained, checkpoint=checkpoint, **kwargs)
    given = {k: v for k, v in (("input_size", input_size), ("mean", tuple(mean) if mean else None),
                               ("std", tuple(std) if std else None)) if v is not None}
    spec = replace(spec, **given)
    if len(spec.mean) != spec.in_chans or len(spec.std) != spec.in_chans:
        raise ClpeftError(f"model.mean and model.std need {spec.in_chans} values (the backbone's input channels), "
                          f"got {len(spec.mean)} and {len(spec.std)}")
    head = IncrementalHead(net.num_features, num_classes, init_std=head_init_std)
    return ContinualModel(net, head, InputAdapter(data, spec, normalize), spec)


def build_model_from_config(config, num_classes: int, data: InputSpec) -> ContinualModel:
    """The model a run's :class:`clpeft.config.ModelConfig` describes."""
    return build_model(config.backbone, num_classes, data, pretrained=config.pretrained, checkpoint=config.checkpoint,
                       head_init_std=config.head_init_std, normalize=config.normalize, input_size=config.input_size,
                       mean=config.mean, std=config.std, **config.kwargs)
