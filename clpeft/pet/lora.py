"""LoRA: a low-rank update ``B·A`` added to a Linear layer's (or a 1x1 convolution's) output."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.catalog import PET_KINDS as CATALOG_PET_KINDS
from clpeft.errors import ClpeftError
from clpeft.pet.config import PETConfig, PETKind, register_pet
from clpeft.pet.families import per_block, unwrap
from clpeft.pet.layers import PETLayer, Scaler, _kaiming_like_linear
from clpeft.utils.typed import option

#: the Linear layers LoRA adapts inside a block, per family (CNN: every 1x1 convolution of the block)
PLACES = {"vit": ["attn.qkv"], "bert": ["attention.self.query", "attention.self.key", "attention.self.value"]}


@dataclass
class LoRAConfig(PETConfig):
    """Low-rank update ``B·A`` (B zero-initialised) on Linear layers or 1x1 convolutions.

    ``kv_only``: on a fused qkv Linear, adapt only the K and V rows with one pair each (LAE);
    False adapts the whole fused output with one pair. ``alpha``: None = a learnable scale per
    pair initialised to 1 (LAE); a float = fixed scale ``alpha / rank`` (PEFT).
    """

    rank: int = option(5, "rank r of each update", ge=1)
    alpha: float | None = option(None, "fixed scale alpha/r (peft); null: learnable scale initialised to 1 (LAE)")
    kv_only: bool = option(True, "on a fused qkv layer adapt only K and V (LAE)")
    parts: str | None = option(None, "on a fused qkv layer, which of q, k, v get their own pair, e.g. qv (SD-LoRA), "
                                     "kv (InfLoRA), qkv; null: kv_only decides")

    def __post_init__(self):
        super().__post_init__()
        if self.parts is not None and (not self.parts or set(self.parts) - set("qkv") or
                                       len(set(self.parts)) != len(self.parts)):
            raise ClpeftError(f"pets.lora.parts must name some of q, k, v once each (e.g. qv), got {self.parts!r}")

    def as_dict(self) -> dict:
        out = super().as_dict()
        if out["parts"] is None:  # unset: the settings (and the run ids) of runs from before the option existed
            del out["parts"]
        return out


class LoRAModule(nn.Module):
    """One (A, B, scale) pair per output slice; A kaiming-uniform, B zero, so ΔW starts at 0.

    ``direction_only``: the pair acts as the direction B·A / (‖B‖_F ‖A‖_F) of each slice (SD-LoRA's normalisation,
    ‖B·A‖_F ≤ 1), its size given by the mixture weight (learned magnitudes); a method sets it, and re-sets it
    after a resume."""

    direction_only = False

    def __init__(self, in_features: int, slices: list[tuple[int, int]], rank: int, alpha: float | None):
        super().__init__()
        self.slices = [tuple(s) for s in slices]
        self.lora_A = nn.ParameterList([nn.Parameter(_kaiming_like_linear((rank, in_features))) for _ in slices])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(end - start, rank)) for start, end in slices])
        fixed = None if alpha is None else alpha / rank
        self.scales = nn.ModuleList([Scaler(fixed) for _ in slices])

    def slice_scale(self, i: int) -> torch.Tensor:
        """The scale of slice ``i``'s pair (divided by ‖B‖_F ‖A‖_F when ``direction_only``)."""
        if not self.direction_only:
            return self.scales[i]()
        return self.scales[i]() / (self.lora_B[i].norm() * self.lora_A[i].norm()).clamp_min(1e-12)

    def delta_weights(self) -> list[torch.Tensor]:
        return [self.slice_scale(i) * (b @ a) for i, (a, b) in enumerate(zip(self.lora_A, self.lora_B))]


class LoRALayer(PETLayer):
    """``base(x) + Σ_slices s·(x Aᵀ) Bᵀ`` added into the slice's output columns (Linear), or into
    the slice's output channels of a 1x1 convolution (same maths on channels)."""

    def __init__(self, base, routing, slices, rank: int, alpha):
        super().__init__(base, routing)
        self.is_conv = isinstance(base, nn.Conv2d)
        if self.is_conv and (base.kernel_size != (1, 1) or base.groups != 1 or base.padding not in ((0, 0), 0)):
            raise ClpeftError("LoRA on a convolution needs a 1x1, ungrouped, unpadded conv; target conv_pw/conv_pwl layers")
        self.in_features = base.in_channels if self.is_conv else base.in_features
        self.slices, self.rank, self.alpha = slices, rank, alpha
        self.merged: str | None = None
        self._unmerged_weight: torch.Tensor | None = None

    def new_instance(self):
        return LoRAModule(self.in_features, self.slices, self.rank, self.alpha)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            sh, sw = self.base.stride
            return x[:, :, ::sh, ::sw].permute(0, 2, 3, 1)
        return x

    def forward(self, x):
        out = self.base(x)
        how = self.route()
        if how is None or self.merged is not None:
            return out
        xi = self._inputs(x)
        kind, obj = how
        if self.is_conv:
            out = out.permute(0, 2, 3, 1)  # a view: the slices below are added into the conv output in place
        for i, (start, end) in enumerate(self.slices):
            if kind == "single":
                d = obj.slice_scale(i) * F.linear(F.linear(xi, obj.lora_A[i].to(xi.dtype)), obj.lora_B[i].to(xi.dtype))
            else:
                mods, w = obj
                a = torch.stack([m.lora_A[i] for m in mods]).to(xi.dtype)        # [K, r, in]
                b = torch.stack([m.lora_B[i] for m in mods]).to(xi.dtype)        # [K, o, r]
                s = torch.stack([m.slice_scale(i) for m in mods]).to(xi.dtype)   # [K]
                flat = xi.reshape(xi.shape[0], -1, xi.shape[-1])
                index = self.routing.mix_index
                if index is None:  # dense: every instance of the bank, weighted
                    u = torch.einsum("bmi,kri->bmkr", flat, a) * (w.to(xi.dtype) * s)[:, None, :, None]
                    d = torch.einsum("bmkr,kor->bmo", u, b)
                else:  # sparse: only each sample's k instances, so the cost does not grow with the bank
                    wk = self.routing.mix_weights.to(xi.dtype) * s[index]        # [B, k]
                    u = torch.einsum("bmi,bkri->bmkr", flat, a[index]) * wk[:, None, :, None]
                    d = torch.einsum("bmkr,bkor->bmo", u, b[index])
                d = d.reshape(*xi.shape[:-1], end - start)
            out[..., start:end] += d.to(out.dtype)
        return out.permute(0, 3, 1, 2) if self.is_conv else out

    @torch.no_grad()
    def merge(self, name: str) -> None:
        if self.merged is not None:
            raise ClpeftError(f"LoRA instance {self.merged!r} is already merged; call unmerge() first")
        self._unmerged_weight = self.base.weight.detach().clone()
        self._add_delta(name, 1.0)
        self.merged = name

    @torch.no_grad()
    def fold(self, names: list[str], weights: list[float]) -> None:
        """Add Σ_k weights[k]·ΔW of ``names`` into the base weight for good and drop those instances: a summed bank's
        output stays the same while its size and cost stop growing (the frozen model is no longer the base)."""
        if self.merged is not None:
            raise ClpeftError(f"LoRA instance {self.merged!r} is merged; unmerge() before folding instances")
        for name, weight in zip(names, weights):
            self._add_delta(name, weight)
        for name in names:
            del self.instances[name]

    @torch.no_grad()
    def _add_delta(self, name: str, weight: float) -> None:
        """base.weight += weight · ΔW of instance ``name``, slice by slice (a 1x1 convolution's as its matrix)."""
        w = self.base.weight
        for (start, end), dw in zip(self.slices, self.instances[name].delta_weights()):
            if self.is_conv:
                w[start:end, :, 0, 0] += float(weight) * dw.to(w.dtype)
            else:
                w[start:end] += float(weight) * dw.to(w.dtype)

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged is None:
            return
        self.base.weight.copy_(self._unmerged_weight)
        self._unmerged_weight, self.merged = None, None


def targets(model, fam: str, config: LoRAConfig) -> list[str]:
    if fam == "cnn":
        from clpeft.pet.families import selected_blocks

        return [f"{prefix}.{n}" for prefix, block in selected_blocks(model, fam, config.blocks)
                for n, m in unwrap(block).named_modules()
                if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    table = dict(PLACES)
    if config.kv_only:  # BERT's separate projections: K and V only, as LAE's fused-qkv slices
        table["bert"] = [p for p in PLACES["bert"] if not p.endswith("query")]
    return per_block(model, fam, config.blocks, table, "lora")


def build(model, name: str, module, config: LoRAConfig, routing, fam: str) -> LoRALayer:
    inner = unwrap(module)
    if not isinstance(inner, (nn.Linear, nn.Conv2d)):
        raise ClpeftError(f"LoRA targets Linear or 1x1 Conv2d layers; {name} is {type(inner).__name__}")
    out = inner.out_features if isinstance(inner, nn.Linear) else inner.out_channels
    if name.endswith("qkv") and (config.parts or config.kv_only):
        d = out // 3
        slices = [("qkv".index(part) * d, ("qkv".index(part) + 1) * d) for part in (config.parts or "kv")]
    elif config.parts:
        raise ClpeftError(f"pets.lora.parts picks slices of a fused qkv layer; {name} is not one (drop parts)")
    else:
        slices = [(0, out)]
    return LoRALayer(module, routing, slices, config.rank, config.alpha)


KIND = register_pet(PETKind("lora", LoRAConfig, targets, build, CATALOG_PET_KINDS["lora"]))
