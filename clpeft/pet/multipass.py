"""Features under every named PET instance at once: ``[B, K, D]`` for K instances, the methods that score a sample
in every instance's space (EASE, MOS, CL-LoRA) need one forward per instance per test sample.

The stock blocks before the first PET-carrying block run once (:class:`~clpeft.pet.trunk.SharedTrunk`); the rest
runs once per instance, one instance after another (the default), or batched — the trunk's output repeated K times,
copy k routed to instance k through the controller's sparse mixture (one forward of B·K rows; ``chunk`` bounds how
many instances share it, and with it the memory). Batched pays off only where the PET's mixture computes just the
routed instance per row: the adapter mixture computes every instance for every row, so on adapters it costs K² and
was measured 4× slower than the loop at 20 instances (``benchmarks/expansion_tier_cost.py``).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

from clpeft.errors import ClpeftError
from clpeft.pet.inject import PETController
from clpeft.pet.trunk import SharedTrunk


class MultiPassFeatures:
    def __init__(self, backbone: torch.nn.Module, controller: PETController):
        self.controller = controller
        self.shared = SharedTrunk(backbone, controller)

    def __call__(self, x: torch.Tensor, names: list[str], batched: bool = False, chunk: int | None = None,
                 around: Callable[[str], ContextManager] | None = None) -> torch.Tensor:
        """``[B, K, D]``: the backbone's features of ``x`` (already through the model's input adapter) under each of
        ``names``, in that order. ``around(name)``, one instance after another only: a context entered around that
        instance's pass (e.g. to load an instance kept elsewhere, or change it as a method's forward does)."""
        h = self.shared.trunk(x)
        if not batched:
            out = []
            for name in names:
                with self.controller.using(name), (around(name) if around is not None else nullcontext()):
                    out.append(self.shared.branch(h))
            return torch.stack(out, 1)
        if around is not None:
            raise ClpeftError("MultiPassFeatures: around= needs the instances one after another (batched=False)")
        step = chunk or len(names)
        parts = []
        for start in range(0, len(names), step):
            group = names[start:start + step]
            k, b = len(group), h.shape[0]
            repeated = h.unsqueeze(1).expand(b, k, *h.shape[1:]).reshape(b * k, *h.shape[1:])
            index = torch.arange(k, device=h.device).repeat(b).unsqueeze(1)      # row b·k + j → instance j
            weights = torch.ones(b * k, 1, device=h.device, dtype=h.dtype)
            with self.controller.mixing(group, weights, index=index):
                parts.append(self.shared.branch(repeated).reshape(b, k, -1))
        return torch.cat(parts, 1)
