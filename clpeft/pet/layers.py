"""PET layers: a wrapper around one stock module holding any number of named PET instances.

A wrapper (``PETLayer``) keeps the original module as ``base`` and its instances in
``instances``; which instance acts is decided by the controller's shared :class:`Routing`:
one active instance, none (the frozen model, exactly), or a per-sample mixture of several
(bank mode, one batched forward). The instance modules hold only parameters and the maths of
their delta; the wrappers decide where the delta enters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.errors import ClpeftError


@dataclass
class Routing:
    """Shared by every layer of one controller: the active instance, or a mixture for bank mode."""

    active: str | None = None
    mix_names: list | None = None
    mix_weights: torch.Tensor | None = None  # [batch, len(mix_names)], or [batch, k] with mix_index
    mix_index: torch.Tensor | None = None  # [batch, k]: sample b mixes mix_names[mix_index[b, j]] (sparse bank)

    def dense_weights(self) -> torch.Tensor:
        """[batch, len(mix_names)] mixture weights (a sparse top-k mixture scattered into the bank)."""
        if self.mix_index is None:
            return self.mix_weights
        dense = self.mix_weights.new_zeros(self.mix_weights.shape[0], len(self.mix_names))
        return dense.scatter_add(1, self.mix_index, self.mix_weights)


class Scaler(nn.Module):
    """LAE's output scale: a learnable scalar initialised to 1.0, or a fixed constant."""

    def __init__(self, value: float | None = None):
        super().__init__()
        if value is None:
            self.value = nn.Parameter(torch.ones(()))
        else:
            self.register_buffer("value", torch.tensor(float(value)), persistent=False)

    def forward(self) -> torch.Tensor:
        return self.value


def _kaiming_like_linear(shape) -> torch.Tensor:
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    return w


class PETLayer(nn.Module):
    """Base wrapper. Subclasses implement ``new_instance()`` and ``forward``."""

    def __init__(self, base: nn.Module, routing: Routing):
        super().__init__()
        self.base = base
        self.instances = nn.ModuleDict()
        self.routing = routing

    def new_instance(self) -> nn.Module:
        raise NotImplementedError

    def add_instance(self, name: str) -> nn.Module:
        inst = self.new_instance()
        ref = next(self.base.parameters(), None)
        if ref is not None:
            inst.to(device=ref.device)
        self.instances[name] = inst
        return inst

    def route(self) -> tuple[str, object] | None:
        """('single', instance) | ('mix', (instances, weights)) | None when no PET acts."""
        r = self.routing
        if r.mix_names is not None:
            return "mix", ([self.instances[n] for n in r.mix_names], r.dense_weights())
        if r.active is not None and r.active in self.instances:
            return "single", self.instances[r.active]
        return None


# --------------------------------------------------------------------------------------- Adapter
class AdapterModule(nn.Module):
    """``s · up(GELU(down(x)))`` on the last dimension; up is zero so the output starts at 0."""

    def __init__(self, d_in: int, d_out: int, bottleneck: int, scale: float | None):
        super().__init__()
        self.down = nn.Linear(d_in, bottleneck)
        self.up = nn.Linear(bottleneck, d_out)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = Scaler(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale() * self.up(F.gelu(self.down(x)))


def adapter_mixture(instances: list[AdapterModule], weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Σ_k w[b,k] · adapter_k(x_b) for every sample b, batched over instances."""
    wd = torch.stack([m.down.weight for m in instances])             # [K, h, D]
    bd = torch.stack([m.down.bias for m in instances])               # [K, h]
    wu = torch.stack([m.up.weight for m in instances])               # [K, O, h]
    bu = torch.stack([m.up.bias for m in instances])                 # [K, O]
    s = torch.stack([m.scale() for m in instances]).to(x.dtype)      # [K]
    b = x.shape[0]
    flat = x.reshape(b, -1, x.shape[-1])                             # [B, M, D]
    hidden = F.gelu(torch.einsum("bmd,khd->bkmh", flat, wd.to(x.dtype)) + bd.to(x.dtype)[None, :, None, :])
    coef = weights.to(x.dtype) * s                                   # [B, K]
    out = torch.einsum("bkmh,koh,bk->bmo", hidden, wu.to(x.dtype), coef) + (coef @ bu.to(x.dtype))[:, None, :]
    return out.reshape(*x.shape[:-1], out.shape[-1])


class AdapterLayer(PETLayer):
    """Adapter beside (``parallel``: fed the module's input) or after (``sequential``) a module.

    Works on token inputs [B, N, D] and on feature maps [B, C, H, W] (adapting channels). A
    module returning a tuple (HF attention) gets the delta on its first element.
    """

    def __init__(self, base, routing, d_in: int, d_out: int, bottleneck: int, scale, mode: str):
        super().__init__(base, routing)
        self.d_in, self.d_out, self.bottleneck, self.scale_value, self.mode = d_in, d_out, bottleneck, scale, mode

    def new_instance(self):
        d_in = self.d_out if self.mode == "sequential" else self.d_in
        return AdapterModule(d_in, self.d_out, self.bottleneck, self.scale_value)

    def delta(self, x: torch.Tensor, how) -> torch.Tensor:
        channels_first = x.dim() == 4
        if channels_first:
            x = x.permute(0, 2, 3, 1)
        kind, obj = how
        out = obj(x) if kind == "single" else adapter_mixture(obj[0], obj[1], x)
        return out.permute(0, 3, 1, 2) if channels_first else out

    def forward(self, x, *args, **kwargs):
        out = self.base(x, *args, **kwargs)
        how = self.route()
        if how is None:
            return out
        main = out[0] if isinstance(out, tuple) else out
        feed = x if self.mode == "parallel" else main
        main = main + self.delta(feed, how)
        return (main, *out[1:]) if isinstance(out, tuple) else main


# ------------------------------------------------------------------------------------------ LoRA
class LoRAModule(nn.Module):
    """One (A, B, scale) pair per output slice; A kaiming-uniform, B zero, so ΔW starts at 0."""

    def __init__(self, in_features: int, slices: list[tuple[int, int]], rank: int, alpha: float | None):
        super().__init__()
        self.slices = [tuple(s) for s in slices]
        self.lora_A = nn.ParameterList([nn.Parameter(_kaiming_like_linear((rank, in_features))) for _ in slices])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(end - start, rank)) for start, end in slices])
        fixed = None if alpha is None else alpha / rank
        self.scales = nn.ModuleList([Scaler(fixed) for _ in slices])

    def delta_weights(self) -> list[torch.Tensor]:
        return [s() * (b @ a) for a, b, s in zip(self.lora_A, self.lora_B, self.scales)]


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
                d = obj.scales[i]() * F.linear(F.linear(xi, obj.lora_A[i].to(xi.dtype)), obj.lora_B[i].to(xi.dtype))
            else:
                mods, w = obj
                a = torch.stack([m.lora_A[i] for m in mods]).to(xi.dtype)        # [K, r, in]
                b = torch.stack([m.lora_B[i] for m in mods]).to(xi.dtype)        # [K, o, r]
                s = torch.stack([m.scales[i]() for m in mods]).to(xi.dtype)      # [K]
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
        w = self.base.weight
        for (start, end), dw in zip(self.slices, self.instances[name].delta_weights()):
            if self.is_conv:
                w[start:end, :, 0, 0] += dw.to(w.dtype)
            else:
                w[start:end] += dw.to(w.dtype)
        self.merged = name

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged is None:
            return
        self.base.weight.copy_(self._unmerged_weight)
        self._unmerged_weight, self.merged = None, None


# ------------------------------------------------------------------------------- Prefix / Prompt
class TokenSet(nn.Module):
    """``length`` tokens of width ``dim``, init U(0, 0.01), times a Scaler."""

    def __init__(self, length: int, dim: int, scale: float | None):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(0.0, 0.01))
        self.scale = Scaler(scale)

    def forward(self) -> torch.Tensor:
        return self.scale() * self.tokens


class PrefixModule(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.key = TokenSet(length, dim, None)
        self.value = TokenSet(length, dim, None)


def mixed_tokens(how, batch: int, get) -> torch.Tensor:
    """[batch or 1, L, D]: one instance's tokens, or the per-sample mixture Σ_k w[b,k]·tokens_k."""
    kind, obj = how
    if kind == "single":
        return get(obj).unsqueeze(0)
    mods, w = obj
    stacked = torch.stack([get(m) for m in mods])  # [K, L, D]
    return torch.einsum("bk,kld->bld", w.to(stacked.dtype), stacked)


class PrefixAttentionLayer(PETLayer):
    """Prefix tuning inside a stock timm ``Attention``, with LAE's compensatory calibration.

    The wrapped module's own layers (qkv, norms, proj, dropouts) are used; only the attention
    product is recomputed with the L key/value tokens appended. With ``fused_attn`` it stays on
    ``F.scaled_dot_product_attention``: values get one extra constant channel (1 for the original
    tokens, 0 for the prefix), so the same fused call also returns 1 − λ, the attention mass
    left on the original tokens; then ``out = O_full + (1 − λ)·O_prefix`` equals the calibrated
    ``(1 − λ)·Attn_orig + Attn_prefix``.
    """

    def __init__(self, base, routing, length: int, compensatory: bool):
        super().__init__(base, routing)
        for attr in ("qkv", "num_heads", "head_dim", "proj"):
            if not hasattr(base, attr):
                raise ClpeftError(f"prefix needs a timm Attention module (with {attr}); got {type(base).__name__}")
        self.length, self.compensatory = length, compensatory
        self.dim = base.num_heads * base.head_dim

    def new_instance(self):
        return PrefixModule(self.length, self.dim)

    def _heads(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        a = self.base
        return t.expand(batch, -1, -1).reshape(batch, -1, a.num_heads, a.head_dim).transpose(1, 2)

    def forward(self, x, attn_mask=None, is_causal=False):
        how = self.route()
        if how is None:
            return self.base(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise ClpeftError("prefix tuning supports unmasked self-attention only (no attn_mask / causal)")
        a = self.base
        B, N, _ = x.shape
        gate = a.gate(x).sigmoid() if getattr(a, "gate", None) is not None else None
        q, k, v = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        pk = self._heads(mixed_tokens(how, B, lambda m: m.key()).to(q.dtype), B)
        pv = self._heads(mixed_tokens(how, B, lambda m: m.value()).to(q.dtype), B)
        dropout = a.attn_drop.p if self.training else 0.0
        if getattr(a, "fused_attn", False) and dropout == 0.0:
            out = self._fused(q, k, v, pk, pv)
        else:
            out = self._manual(q, k, v, pk, pv, a)
        out = out.transpose(1, 2).reshape(B, N, self.dim)
        out = a.norm(out) if hasattr(a, "norm") else out
        if gate is not None:
            out = out * gate
        return a.proj_drop(a.proj(out))

    def _fused(self, q, k, v, pk, pv):
        keys = torch.cat([k, pk], dim=2)
        if not self.compensatory:
            return F.scaled_dot_product_attention(q, keys, torch.cat([v, pv], dim=2))
        hd = v.shape[-1]
        pad = (-(hd + 1)) % 8  # keep the fused kernels' alignment
        ones = v.new_ones(*v.shape[:-1], 1)
        v_aug = torch.cat([v, ones, v.new_zeros(*v.shape[:-1], pad)], dim=-1)
        pv_aug = torch.cat([pv, pv.new_zeros(*pv.shape[:-1], 1 + pad)], dim=-1)
        full = F.scaled_dot_product_attention(q, keys, torch.cat([v_aug, pv_aug], dim=2))
        kept = full[..., hd:hd + 1]                       # 1 − λ
        prefix_only = F.scaled_dot_product_attention(q, pk, pv)  # softmax over the L prefix keys only
        return full[..., :hd] + kept * prefix_only

    def _manual(self, q, k, v, pk, pv, a):
        n = k.shape[2]
        attn = (q * a.scale) @ torch.cat([k, pk], dim=2).transpose(-2, -1)
        attn = a.attn_drop(attn.softmax(dim=-1))
        if self.compensatory:
            lam = attn[..., n:].sum(dim=-1, keepdim=True).clamp_min(1e-12)
            attn = torch.cat([attn[..., :n], attn[..., n:] / lam], dim=-1)
        return attn @ torch.cat([v, pv], dim=2)


class PromptAttentionLayer(PETLayer):
    """Learned tokens inserted into an attention module's input after the first ``position``
    tokens (the class token) and removed from its output, so the residual stream keeps N tokens."""

    def __init__(self, base, routing, length: int, dim: int, scale, position: int = 1):
        super().__init__(base, routing)
        self.length, self.dim, self.scale_value, self.position = length, dim, scale, position

    def new_instance(self):
        return TokenSet(self.length, self.dim, self.scale_value)

    def forward(self, x, *args, **kwargs):
        how = self.route()
        if how is None:
            return self.base(x, *args, **kwargs)
        p = self.position
        tokens = mixed_tokens(how, x.shape[0], lambda m: m()).to(x.dtype).expand(x.shape[0], -1, -1)
        out = self.base(torch.cat([x[:, :p], tokens, x[:, p:]], dim=1), *args, **kwargs)
        return torch.cat([out[:, :p], out[:, p + self.length:]], dim=1)


class WholeOutputLayer(PETLayer):
    """A wrapper whose instance replaces the base's whole computation (``output_with(x, instance)``), as a
    mask or a set of normalisation statistics does; bank mode mixes the instances' outputs per sample."""

    def output_with(self, x, instance):
        raise NotImplementedError

    def forward(self, x):
        how = self.route()
        if how is None:
            return self.base(x)
        if how[0] == "single":
            return self.output_with(x, how[1])
        instances, weights = how[1]
        out = 0
        for k, inst in enumerate(instances):
            y = self.output_with(x, inst)
            out = out + weights[:, k].to(y.dtype).view(-1, *([1] * (y.dim() - 1))) * y
        return out


# ------------------------------------------------------------------------------------- Supermask
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


class MaskScores(nn.Module):
    """One instance's edge-popup scores; ``frozen`` caches its binary mask once the scores stop training."""

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

    def __init__(self, base, routing, sparsity_kept: float, signed_constant: bool):
        super().__init__(base, routing)
        if not isinstance(base, (nn.Linear, nn.Conv2d)):
            raise ClpeftError(f"supermasks apply to Linear and Conv2d layers, not {type(base).__name__}")
        if not 0.0 < sparsity_kept <= 1.0:
            raise ClpeftError(f"sparsity_kept must be in (0, 1], got {sparsity_kept}")
        self.sparsity_kept = sparsity_kept
        self.fan_in = base.weight[0].numel()
        if signed_constant:
            with torch.no_grad():
                base.weight.copy_(base.weight.sign() * math.sqrt(2.0 / self.fan_in))

    def new_instance(self):
        return MaskScores(self.base.weight.shape, self.fan_in)

    def _mask_of(self, inst: MaskScores) -> torch.Tensor:
        if inst.frozen is not None:
            return inst.frozen.to(self.base.weight.dtype)
        return TopKMask.apply(inst.scores.abs(), self.sparsity_kept)

    def mask(self, name: str) -> torch.Tensor:
        return self._mask_of(self.instances[name])

    @torch.no_grad()
    def freeze(self, name: str) -> None:
        """Cache instance ``name``'s binary mask (its scores no longer train): no top-k per forward."""
        inst = self.instances[name]
        inst.frozen = None
        inst.frozen = self._mask_of(inst).bool()

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
