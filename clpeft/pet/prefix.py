"""Prefix tuning: learned key/value tokens appended inside a stock timm ``Attention``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.catalog import PET_KINDS as CATALOG_PET_KINDS
from clpeft.errors import ClpeftError
from clpeft.pet.config import PETConfig, PETKind, register_pet
from clpeft.pet.families import per_block
from clpeft.pet.layers import PETLayer, TokenSet, mixed_tokens
from clpeft.utils.typed import option


@dataclass
class PrefixConfig(PETConfig):
    """``length`` learned key and value tokens per attention layer, init U(``init_low``, ``init_high``),
    with LAE's compensatory calibration (the original attention keeps weight ``1 − λ``) and learnable
    key/value scales initialised to 1 by default (LAE); prompt-pool methods use plain prefixes
    (``compensatory: false``, ``scale: 1.0``)."""

    length: int = option(10, "prefix tokens per attention layer (each for keys and for values)", ge=1)
    compensatory: bool = option(True, "LAE's compensatory calibration of the original attention")
    scale: float | None = option(None, "fixed key/value scale; null: learnable scalars initialised to 1 (LAE)")
    init_low: float = option(0.0, "tokens are drawn from U(init_low, init_high)")
    init_high: float = option(0.01, "tokens are drawn from U(init_low, init_high)")


class PrefixModule(nn.Module):
    def __init__(self, length: int, dim: int, scale: float | None = None, init: tuple = (0.0, 0.01)):
        super().__init__()
        self.key = TokenSet(length, dim, scale, init)
        self.value = TokenSet(length, dim, scale, init)


class PrefixAttentionLayer(PETLayer):
    """Prefix tuning inside a stock timm ``Attention``, with LAE's compensatory calibration.

    The wrapped module's own layers (qkv, norms, proj, dropouts) are used; only the attention
    product is recomputed with the L key/value tokens appended. With ``fused_attn`` it stays on
    ``F.scaled_dot_product_attention``: values get one extra constant channel (1 for the original
    tokens, 0 for the prefix), so the same fused call also returns 1 − λ, the attention mass
    left on the original tokens; then ``out = O_full + (1 − λ)·O_prefix`` equals the calibrated
    ``(1 − λ)·Attn_orig + Attn_prefix``.
    """

    token_layer = True

    def __init__(self, base, routing, length: int, compensatory: bool, scale: float | None = None,
                 init: tuple = (0.0, 0.01)):
        super().__init__(base, routing)
        for attr in ("qkv", "num_heads", "head_dim", "proj"):
            if not hasattr(base, attr):
                raise ClpeftError(f"prefix needs a timm Attention module (with {attr}); got {type(base).__name__}")
        self.length, self.compensatory, self.scale_value, self.init = length, compensatory, scale, tuple(init)
        self.dim = base.num_heads * base.head_dim

    def new_instance(self):
        return PrefixModule(self.length, self.dim, self.scale_value, self.init)

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


def targets(model, fam: str, config: PrefixConfig) -> list[str]:
    return per_block(model, fam, config.blocks, {"vit": ["attn"]}, "prefix", "a timm ViT (attention with fused qkv)")


def build(model, name: str, module, config: PrefixConfig, routing, fam: str) -> PrefixAttentionLayer:
    if config.init_high <= config.init_low:
        raise ClpeftError(f"pets.prefix.init_high must be > init_low (got {config.init_low}, {config.init_high})")
    return PrefixAttentionLayer(module, routing, config.length, config.compensatory, config.scale,
                                (config.init_low, config.init_high))


KIND = register_pet(PETKind("prefix", PrefixConfig, targets, build, CATALOG_PET_KINDS["prefix"]))
