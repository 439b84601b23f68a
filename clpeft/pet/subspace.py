"""Layer-input subspaces: what the inputs of some layers span, and a memory of the directions earlier
experiences used — the statistics behind gradient-projection and subspace-designed PETs (InfLoRA, GPM, …).

- :class:`InputGram` records, for named modules, the token-averaged Gram matrix C = mean over every token of
  x xᵀ of the module's input (accumulated in float64 on the module's device, summed over torchrun ranks).
- :class:`SubspaceMemory` keeps one orthonormal basis per layer with the DualGPM energy rule: a layer stores
  the directions its inputs used (``remove``) while they are fewer than half the width, else the free
  complement (``retain``); ``residual(C, i)`` is C with the remembered directions projected out.

Neither names a method: a strategy decides which modules to watch, when to record and what to do with the
residual (e.g. take its top singular vectors as a new LoRA's A).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from clpeft import distributed
from clpeft.errors import ClpeftError

ENERGIES = ("squared", "plain")


class InputGram:
    """Token-averaged Gram matrices of the inputs of ``modules`` (name → module), recorded inside ``recording()``."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = dict(modules)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def _hook(self, name: str):
        def record(module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1]).double()
            gram = flat.T @ flat
            self.sums[name] = gram if name not in self.sums else self.sums[name] + gram
            self.counts[name] = self.counts.get(name, 0) + flat.shape[0]
        return record

    @contextmanager
    def recording(self):
        """Forward passes inside the block add their inputs' outer products (starting from zero)."""
        self.sums, self.counts = {}, {}
        handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in self.modules.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
        if distributed.world_size() > 1:  # every rank saw its own slice of the data
            for name in list(self.sums):
                count = torch.tensor([float(self.counts[name])], dtype=torch.float64, device=self.sums[name].device)
                torch.distributed.all_reduce(self.sums[name])
                torch.distributed.all_reduce(count)
                self.counts[name] = int(count.item())

    def gram(self, name: str) -> torch.Tensor:
        if not self.counts.get(name):
            raise ClpeftError(f"no input reached {name} while recording; run a forward pass inside recording()")
        return self.sums[name] / self.counts[name]

    def grams(self) -> list[torch.Tensor]:
        return [self.gram(n) for n in self.modules]


class SubspaceMemory:
    """Per layer, an orthonormal basis [D, k] (float64) and whether it holds the used directions (``remove``) or
    the free complement (``retain``), grown after each experience by the DualGPM rule.

    ``energy``: ``"squared"`` ranks directions by the squared singular values of C (what InfLoRA's code does
    with a covariance, i.e. squared eigenvalues), ``"plain"`` by the singular values themselves."""

    def __init__(self, energy: str = "squared"):
        if energy not in ENERGIES:
            raise ClpeftError(f"energy must be one of {', '.join(ENERGIES)}, got {energy!r}")
        self.energy = energy
        self.bases: list[torch.Tensor] = []
        self.kinds: list[str] = []

    @staticmethod
    def threshold(start: float, end: float, experience: int, n_experiences: int) -> float:
        """The energy kept after ``experience``: ε = start + (end − start)·t/T."""
        return start + (end - start) * experience / n_experiences

    def _power(self, s: torch.Tensor) -> torch.Tensor:
        return s ** 2 if self.energy == "squared" else s

    def residual(self, C: torch.Tensor, layer: int) -> torch.Tensor:
        """C with the remembered directions removed: (I − MMᵀ)C for a used basis M, NNᵀC for a free basis N."""
        if not self.bases:
            return C
        M = self.bases[layer].to(C)
        return C - M @ (M.T @ C) if self.kinds[layer] == "remove" else M @ (M.T @ C)

    def dimension(self, layer: int) -> int:
        """How many directions layer ``layer``'s earlier experiences use."""
        D, k = self.bases[layer].shape
        return k if self.kinds[layer] == "remove" else D - k

    def update(self, grams: list[torch.Tensor], threshold: float) -> None:
        """Add what ``grams`` (one per layer, this experience's inputs) need to keep ``threshold`` of their energy."""
        grams = [g.double().cpu() for g in grams]
        if not self.bases:
            for C in grams:
                U, S, _ = torch.linalg.svd(C, full_matrices=False)
                ratio = self._power(S) / self._power(S).sum()
                r = max(int((torch.cumsum(ratio, 0) < threshold).sum()), 1)
                self.bases.append(U[:, :r])  # as used directions; past half the width it turns into the complement
                self.kinds.append("remove")  # below (the official code labels r ≥ D/2 'retain' without complementing)
        else:
            for i, C in enumerate(grams):
                total = self._power(torch.linalg.svdvals(C)).sum()
                U, S, _ = torch.linalg.svd(self.residual(C, i), full_matrices=False)
                ratio = self._power(S) / total
                kept = self._power(S).sum() / total  # the energy the stored (remove) / free (retain) basis holds
                r = 0
                if self.kinds[i] == "remove":
                    covered = 1 - kept
                    while r < len(ratio) and covered < threshold:
                        covered, r = covered + ratio[r], r + 1
                    if r:
                        grown = torch.cat([self.bases[i], U[:, :r]], dim=1)
                        self.bases[i] = grown[:, : grown.shape[0]]
                else:
                    while r < len(ratio) and kept >= 1 - threshold:
                        kept, r = kept - ratio[r], r + 1
                    if r:
                        N = self.bases[i]
                        Ur = U[:, :r]
                        left = N - Ur @ (Ur.T @ N)
                        self.bases[i] = torch.linalg.svd(left)[0][:, : N.shape[1] - r]
        for i, basis in enumerate(self.bases):  # a used basis past half the width is stored as its complement
            D, k = basis.shape
            if self.kinds[i] == "remove" and k > D / 2:
                self.bases[i] = torch.linalg.svd(basis)[0][:, k:]
                self.kinds[i] = "retain"

    def state_dict(self) -> dict:
        """What a checkpoint keeps (so a resumed run designs the same subspaces)."""
        return {"energy": self.energy, "bases": [b.clone() for b in self.bases], "kinds": list(self.kinds)}

    def load_state_dict(self, state: dict) -> None:
        self.energy, self.bases, self.kinds = state["energy"], [b.double() for b in state["bases"]], list(state["kinds"])
