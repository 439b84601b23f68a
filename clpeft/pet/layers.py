"""The machinery every PET kind shares: a wrapper around one stock module holding named instances.

A wrapper (``PETLayer``) keeps the original module as ``base`` and its instances in
``instances``; which instance acts is decided by the controller's shared :class:`Routing`:
one active instance, none (the frozen model, exactly), or a per-sample mixture of several
(bank mode, one batched forward). The instance modules hold only parameters and the maths of
their delta; the wrappers decide where the delta enters. Each kind's layer lives in its own module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from clpeft.errors import ClpeftError


@dataclass
class Routing:
    """Shared by every layer of one controller: the active instance, or a mixture for bank mode."""

    active: str | None = None
    mix_names: list | None = None
    mix_weights: torch.Tensor | None = None  # [batch, len(mix_names)], or [batch, k] with mix_index
    mix_index: torch.Tensor | None = None  # [batch, k]: sample b mixes mix_names[mix_index[b, j]] (sparse bank)
    mix_mode: str = "sum"  # "sum": Σ weights·instances; "concat": instances' tokens side by side (token PETs)

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

    #: layers whose instances are token sets, which can also be concatenated per sample (prefix, prompt)
    token_layer = False

    def route(self) -> tuple[str, object] | None:
        """('single', instance) | ('mix', (instances, weights)) | ('concat', (instances, index)) | None when no
        PET acts."""
        r = self.routing
        if r.mix_names is not None:
            if r.mix_mode == "concat":
                if not self.token_layer:
                    raise ClpeftError(f"concatenating instances is for token PETs (prefix, prompt), not {type(self).__name__}")
                return "concat", ([self.instances[n] for n in r.mix_names], r.mix_index)
            return "mix", ([self.instances[n] for n in r.mix_names], r.dense_weights())
        if r.active is not None and r.active in self.instances:
            return "single", self.instances[r.active]
        return None


# ---------------------------------------------------------------------------- shared pieces
class TokenSet(nn.Module):
    """``length`` tokens of width ``dim``, init U(low, high) (default U(0, 0.01)), times a Scaler."""

    def __init__(self, length: int, dim: int, scale: float | None, init: tuple[float, float] = (0.0, 0.01)):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(*init))
        self.scale = Scaler(scale)

    def forward(self) -> torch.Tensor:
        return self.scale() * self.tokens


def mixed_tokens(how, batch: int, get) -> torch.Tensor:
    """[batch or 1, L', D]: one instance's tokens (L' = L), the per-sample mixture Σ_k w[b,k]·tokens_k (L' = L),
    or each sample's k chosen instances side by side (``concat``: L' = k·L, in the order of its index row)."""
    kind, obj = how
    if kind == "single":
        return get(obj).unsqueeze(0)
    mods, w = obj
    stacked = torch.stack([get(m) for m in mods])  # [K, L, D]
    if kind == "concat":
        chosen = stacked[w]  # w is the index [B, k] here → [B, k, L, D]
        return chosen.reshape(chosen.shape[0], -1, chosen.shape[-1])
    return torch.einsum("bk,kld->bld", w.to(stacked.dtype), stacked)


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
