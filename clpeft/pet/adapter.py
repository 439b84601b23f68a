"""Adapter: a bottleneck ``s·up(GELU(down(x)))`` beside or after a stock module."""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.catalog import PET_KINDS as CATALOG_PET_KINDS
from clpeft.errors import ClpeftError
from clpeft.pet.config import PETConfig, PETKind, register_pet
from clpeft.pet.families import io_features, per_block
from clpeft.pet.layers import PETLayer, Scaler
from clpeft.utils.typed import option

#: where an adapter sits, per family and position: the module (inside a block) it runs beside. ``mlp_residual``:
#: beside a ViT block's MLP sub-layer but fed the residual stream before that sub-layer's norm (AdaptFormer)
PLACES = {"vit": {"attn": "attn", "mlp": "mlp", "mlp_residual": "mlp"}, "bert": {"attn": "attention", "mlp": "output"},
          "cnn": {"block": ""}}
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass
class AdapterConfig(PETConfig):
    """Bottleneck adapter ``s·up(dropout(act(down(x))))``, up-projection zero-initialised.

    ``bottleneck``: hidden width h. ``position``: the sub-layer it runs beside — ``attn`` or
    ``mlp`` (ViT/BERT), ``mlp_residual`` (ViT: beside the MLP, fed the residual stream before its norm,
    as AdaptFormer/APER/RanPAC), ``block`` (CNN blocks); None = ``attn`` on transformers, ``block`` on CNNs.
    ``mode``: ``parallel`` (added to the wrapped module's output, fed its input) or ``sequential``
    (applied to its output, residually); None = parallel on transformers, sequential on CNNs.
    ``scale``: None = learnable scalar initialised to 1 (LAE), a float = fixed.
    """

    bottleneck: int = option(5, "hidden width h", ge=1)
    position: str | None = option(None, "attn | mlp (transformers) or block (CNN); null: the family's first")
    mode: str | None = option(None, "parallel | sequential; null: parallel on transformers, sequential on CNNs",
                              choices=("parallel", "sequential", None))
    scale: float | None = option(None, "output scale; null: learnable scalar initialised to 1")
    activation: str = option("gelu", "activation of the bottleneck", choices=tuple(ACTIVATIONS))
    dropout: float = option(0.0, "dropout after the activation, while training", ge=0.0, lt=1.0)


class AdapterModule(nn.Module):
    """``s · up(dropout(act(down(x))))`` on the last dimension; up is zero so the output starts at 0."""

    def __init__(self, d_in: int, d_out: int, bottleneck: int, scale: float | None, activation: str = "gelu",
                 dropout: float = 0.0):
        super().__init__()
        self.down = nn.Linear(d_in, bottleneck)
        self.up = nn.Linear(bottleneck, d_out)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = Scaler(scale)
        self.activation = activation
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale() * self.up(self.dropout(ACTIVATIONS[self.activation](self.down(x))))


def adapter_mixture(instances: list[AdapterModule], weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_k w[b,k] · adapter_k(x_b) for every sample b, batched over instances."""
    wd = torch.stack([m.down.weight for m in instances])             # [K, h, D]
    bd = torch.stack([m.down.bias for m in instances])               # [K, h]
    wu = torch.stack([m.up.weight for m in instances])               # [K, O, h]
    bu = torch.stack([m.up.bias for m in instances])                 # [K, O]
    s = torch.stack([m.scale() for m in instances]).to(x.dtype)      # [K]
    b = x.shape[0]
    flat = x.reshape(b, -1, x.shape[-1])                             # [B, M, D]
    act = ACTIVATIONS[instances[0].activation]
    hidden = act(torch.einsum("bmd,khd->bkmh", flat, wd.to(x.dtype)) + bd.to(x.dtype)[None, :, None, :])
    hidden = instances[0].dropout(hidden)
    coef = weights.to(x.dtype) * s                                   # [B, K]
    out = torch.einsum("bkmh,koh,bk->bmo", hidden, wu.to(x.dtype), coef) + (coef @ bu.to(x.dtype))[:, None, :]
    return out.reshape(*x.shape[:-1], out.shape[-1])


class AdapterLayer(PETLayer):
    """Adapter beside (``parallel``: fed the module's input) or after (``sequential``) a module.

    Works on token inputs [B, N, D] and on feature maps [B, C, H, W] (adapting channels). A
    module returning a tuple (HF attention) gets the delta on its first element.
    """

    def __init__(self, base, routing, d_in: int, d_out: int, bottleneck: int, scale, mode: str,
                 activation: str = "gelu", dropout: float = 0.0, tap: nn.Module | None = None):
        super().__init__(base, routing)
        self.d_in, self.d_out, self.bottleneck, self.scale_value, self.mode = d_in, d_out, bottleneck, scale, mode
        self.activation, self.dropout = activation, dropout
        self._tapped = None
        if tap is not None:  # feed the adapter what enters ``tap`` (e.g. the residual stream before a norm)
            tap.register_forward_pre_hook(self._tap)

    def _tap(self, module, args):
        self._tapped = args[0]

    def new_instance(self):
        d_in = self.d_out if self.mode == "sequential" else self.d_in
        return AdapterModule(d_in, self.d_out, self.bottleneck, self.scale_value, self.activation, self.dropout)

    def delta(self, x: torch.Tensor, how) -> torch.Tensor:
        channels_first = x.dim() == 4
        if channels_first:
            x = x.permute(0, 2, 3, 1)
        kind, obj = how
        out = obj(x) if kind == "single" else adapter_mixture(obj[0], obj[1], x)
        return out.permute(0, 3, 1, 2) if channels_first else out

    def forward(self, x, *args, **kwargs):
        tapped, self._tapped = self._tapped, None
        out = self.base(x, *args, **kwargs)
        how = self.route()
        if how is None:
            return out
        main = out[0] if isinstance(out, tuple) else out
        feed = (tapped if tapped is not None else x) if self.mode == "parallel" else main
        main = main + self.delta(feed, how)
        return (main, *out[1:]) if isinstance(out, tuple) else main


def targets(model, fam: str, config: AdapterConfig) -> list[str]:
    if fam not in PLACES:
        return per_block(model, fam, config.blocks, {}, "adapter")
    position = config.position or next(iter(PLACES[fam]))
    if position not in PLACES[fam]:
        raise ClpeftError(f"adapter position {position!r} is not available on {fam}; use one of {', '.join(PLACES[fam])}")
    return per_block(model, fam, config.blocks, {fam: [PLACES[fam][position]]}, "adapter")


def build(model, name: str, module, config: AdapterConfig, routing, fam: str) -> AdapterLayer:
    d_in, d_out = io_features(module)
    mode = config.mode or ("sequential" if fam == "cnn" else "parallel")
    if mode == "parallel" and fam == "cnn" and d_in != d_out:
        raise ClpeftError(f"{name} changes width {d_in}→{d_out}; a parallel adapter cannot sit beside it, use mode: sequential")
    tap = None
    if config.position == "mlp_residual":
        if mode != "parallel" or config.targets:
            raise ClpeftError("position mlp_residual is a parallel adapter placed by blocks; drop mode/targets")
        block = model.get_submodule(name.rsplit(".", 1)[0])
        tap, d_in = block.norm2, d_out  # the residual stream has the block's width
    return AdapterLayer(module, routing, d_in, d_out, config.bottleneck, config.scale, mode, config.activation,
                        config.dropout, tap)


KIND = register_pet(PETKind("adapter", AdapterConfig, targets, build, CATALOG_PET_KINDS["adapter"]))
