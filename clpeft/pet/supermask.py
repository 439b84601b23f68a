"""Supermasks: a learned binary mask per instance over frozen Linear/Conv2d weights (edge-popup), with
per-instance BatchNorm statistics."""
from __future__ import annotations

from dataclasses import dataclass

import math

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.catalog import PET_KINDS as CATALOG_PET_KINDS
from clpeft.errors import ClpeftError
from clpeft.pet.config import PETConfig, PETKind, register_pet
from clpeft.pet.families import selected_blocks, unwrap
from clpeft.pet.layers import PETLayer, WholeOutputLayer
from clpeft.utils.typed import option


@dataclass
class SupermaskConfig(PETConfig):
    """Edge-popup supermask per instance (task) over frozen weights of Linear/Conv2d layers.

    ``sparsity_kept``: fraction of each layer's weights kept (ExSSNeT's ``sparsity``, default 0.1).
    ``blocks``/``targets``: which layers; ``blocks=None`` with no targets masks every Linear and Conv2d.
    ``signed_constant``: re-initialise the masked weights to ±sqrt(2/fan_in) (ExSSNeT's init).
    ``task_norm``: BatchNorm layers in scope keep running statistics per instance (ExSSNeT's per-task BN).
    """

    sparsity_kept: float = option(0.1, "fraction of each layer's weights kept", gt=0.0, le=1.0)
    signed_constant: bool = option(False, "re-initialise weights to ±sqrt(2/fan_in) (ExSSNeT)")
    task_norm: bool = option(True, "BatchNorm layers keep running statistics per instance")
    blocks: tuple[int, ...] | None = option(None, "blocks masked (null: every Linear/Conv2d of the model)")
    keep_scores: bool = option(True, "a frozen mask keeps its float scores (ExSSNeT's kkt starts new masks from them); "
                                     "false keeps only its bits: 1/8 byte per weight instead of 5, for long streams")


class TopKMask(torch.autograd.Function):
    """Per-layer top-k of |scores| → binary mask; straight-through gradient (edge-popup)."""

    @staticmethod
    def forward(ctx, magnitudes: torch.Tensor, kept: float) -> torch.Tensor:
        flat = magnitudes.flatten()
        n_zero = int((1 - kept) * flat.numel())
        if n_zero == 0:
            return torch.ones_like(magnitudes)
        # a selection, not a sort (≈ 8× faster on a 784×300 layer): keep what lies above the n_zero-th smallest
        threshold = flat.kthvalue(n_zero).values
        keep = flat > threshold
        missing = flat.numel() - n_zero - int(keep.sum())
        if missing > 0:  # ties at the threshold: keep the last tied entries, so exactly n_zero are dropped
            tied = torch.nonzero(flat == threshold).flatten()
            keep[tied[-missing:]] = True
        return keep.to(magnitudes.dtype).view_as(magnitudes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as uint8, eight entries a byte (numpy's packbits order, little bit first)."""
    flat = mask.flatten().to(torch.uint8)
    flat = F.pad(flat, (0, -flat.numel() % 8)).view(-1, 8)
    return (flat << torch.arange(8, dtype=torch.uint8, device=mask.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The boolean tensor of ``shape`` that :func:`pack_bits` packed."""
    bits = (packed[:, None] >> torch.arange(8, dtype=torch.uint8, device=packed.device)) & 1
    return bits.flatten()[: math.prod(shape)].view(shape).bool()


class MaskScores(nn.Module):
    """One instance's edge-popup scores; ``frozen`` caches its binary mask once the scores stop training (bits packed
    eight a byte, with the scores dropped, when the layer does not keep them)."""

    def __init__(self, shape: torch.Size, fan_in: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.scores = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.register_buffer("frozen", None)


class SupermaskLayer(WholeOutputLayer):
    """``w_eff = weight ⊙ mask(scores_task)`` on a Linear or Conv2d; no instance active = the base layer.

    Bank mode (``mixing``) is the superposition SupSup infers tasks with: sample ``b`` gets
    ``Σ_k α_bk · (weight ⊙ M_k) x_b``, computed as one output per mask mixed per sample.
    """

    def __init__(self, base, routing, sparsity_kept: float, signed_constant: bool, keep_scores: bool = True):
        super().__init__(base, routing)
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise ClpeftError(f"supermasks apply to Linear and Conv2d layers, not {type(base).__name__}")
        if not 0.0 < sparsity_kept <= 1.0:
            raise ClpeftError(f"sparsity_kept must be in (0, 1], got {sparsity_kept}")
        self.sparsity_kept = sparsity_kept
        self.keep_scores = keep_scores
        self.fan_in = base.weight[0].numel()
        if signed_constant:
            with torch.no_grad():
                base.weight.copy_(base.weight.sign() * math.sqrt(2.0 / self.fan_in))

    def new_instance(self):
        return MaskScores(self.base.weight.shape, self.fan_in)

    def _mask_of(self, inst: MaskScores) -> torch.Tensor:
        if inst.frozen is not None:
            return self._frozen_bool(inst).to(self.base.weight.dtype)
        return TopKMask.apply(inst.scores.abs(), self.sparsity_kept)

    def _frozen_bool(self, inst: MaskScores) -> torch.Tensor:
        if inst.frozen.dtype == torch.uint8:
            return unpack_bits(inst.frozen, self.base.weight.shape)
        return inst.frozen

    def mask(self, name: str) -> torch.Tensor:
        return self._mask_of(self.instances[name])

    def frozen_mask(self, name: str) -> torch.Tensor:
        """Instance ``name``'s binary mask as booleans of the weight's shape (after :meth:`freeze`)."""
        inst = self.instances[name]
        if inst.frozen is None:
            raise ClpeftError(f"supermask instance {name!r} is still training; freeze it first")
        return self._frozen_bool(inst)

    @torch.no_grad()
    def freeze(self, name: str) -> None:
        """Cache instance ``name``'s binary mask (its scores no longer train): no top-k per forward. Without
        ``keep_scores`` the mask is kept as packed bits and the scores become an empty tensor, so a long stream
        stores 1/8 byte per weight and task; a resumed run freezes its finished instances before loading, so the
        shapes match the saved state."""
        inst = self.instances[name]
        inst.frozen = None
        mask = self._mask_of(inst).bool()
        if self.keep_scores:
            inst.frozen = mask
            return
        inst.frozen = pack_bits(mask)
        inst.scores = nn.Parameter(inst.scores.new_empty(0), requires_grad=False)

    def output_with(self, x, inst: MaskScores):
        w = self.base.weight * self._mask_of(inst)
        b = self.base
        if type(b) is nn.Linear:
            return F.linear(x, w, b.bias)
        if type(b) is nn.Conv2d and b.padding_mode == "zeros":
            return F.conv2d(x, w, b.bias, b.stride, b.padding, b.dilation, b.groups)
        # subclasses with their own forward (timm's Conv2dSame pads at run time): their forward, our weight
        return torch.func.functional_call(b, {"weight": w}, (x,))


class NormStatistics(nn.Module):
    """One instance's BatchNorm running statistics (no parameters: the affine part stays shared and frozen)."""

    def __init__(self, running_mean: torch.Tensor, running_var: torch.Tensor):
        super().__init__()
        self.register_buffer("running_mean", running_mean.detach().clone())
        self.register_buffer("running_var", running_var.detach().clone())
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))


class TaskNormLayer(WholeOutputLayer):
    """Per-instance BatchNorm statistics (ExSSNeT's per-task non-affine BN) around a stock BatchNorm.

    A new instance starts from the base layer's statistics (fresh for a net trained from scratch,
    the pretrained ones otherwise); only the active instance's statistics move, and only in train
    mode, so a finished task's normalisation never changes. The base's affine weights (if any) are
    applied unchanged; timm's ``BatchNormAct2d`` keeps its activation. Bank mode mixes the
    per-instance outputs per sample.
    """

    def __init__(self, base, routing):
        super().__init__(base, routing)
        if not isinstance(base, nn.modules.batchnorm._BatchNorm) or not base.track_running_stats:
            raise ClpeftError(f"per-task statistics need a BatchNorm with running statistics, not {type(base).__name__}")

    def new_instance(self):
        return NormStatistics(self.base.running_mean, self.base.running_var)

    def output_with(self, x, stats: NormStatistics):
        b = self.base
        if self.training:
            stats.num_batches_tracked.add_(1)
        momentum = b.momentum if b.momentum is not None else 1.0 / float(stats.num_batches_tracked.clamp_min(1))
        y = F.batch_norm(x, stats.running_mean, stats.running_var, b.weight, b.bias, self.training, momentum, b.eps)
        for extra in ("drop", "act"):  # timm's BatchNormAct2d
            if hasattr(b, extra):
                y = getattr(b, extra)(y)
        return y


def targets(model, fam: str, config: SupermaskConfig) -> list[str]:
    """Every Linear and Conv2d (and, with ``task_norm``, every BatchNorm) in the chosen blocks or the whole model."""
    scope = [("", model)] if config.blocks is None or fam == "unknown" else selected_blocks(model, fam, config.blocks)
    kinds = (nn.Linear, nn.Conv2d) + ((nn.modules.batchnorm._BatchNorm,) if config.task_norm else ())
    return [".".join(p for p in (prefix, n) if p) for prefix, module in scope for n, m in module.named_modules()
            if isinstance(m, kinds) and not isinstance(m, PETLayer)]


def build(model, name: str, module, config: SupermaskConfig, routing, fam: str) -> PETLayer:
    if isinstance(unwrap(module), nn.modules.batchnorm._BatchNorm):
        return TaskNormLayer(module, routing)
    return SupermaskLayer(module, routing, config.sparsity_kept, config.signed_constant, config.keep_scores)


KIND = register_pet(PETKind("supermask", SupermaskConfig, targets, build, CATALOG_PET_KINDS["supermask"]))
