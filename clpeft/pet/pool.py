"""A prompt pool: named prefix instances in some ViT blocks, keys (and optionally attention vectors) to
choose among them per sample from a query feature — on a stock timm model, no forked ViT.

What prompt-pool methods share (L2P, DualPrompt, CODA-Prompt and their kin), without naming any:

- ``PromptPool(backbone, size, length, blocks, key_dim, …)`` injects a plain prefix PET (no calibration,
  fixed scale) with ``size`` instances ``p0 … p{size-1}``; ``length`` is the tokens per instance, split in half
  between keys and values as the prefix-tuning prompt-pool codes do (an even length);
- ``similarity(query, upto)``: cosine of the query with each key ``[B, P]``, or — with ``attention=True`` —
  cos(q ⊙ A_m, K_m) per component (attention-weighted queries);
- ``top_k(query, k, upto)``: each sample's k most similar instances; ``batch_vote`` turns it into the k ids
  most frequent in the batch (an inference trick, so a labelled option of the methods);
- ``concatenated(index)`` (each sample's chosen prompts side by side) and ``weighted(weights)``
  (a per-sample weighted sum) route one batched forward through the backbone (``pet.mixing``);
- ``gram_schmidt(start, stop, generator)`` re-draws instances/keys [start, stop) orthonormal to everything
  before them (CODA-Prompt's per-task initialisation).

The pool is an ``nn.Module`` (keys, attention), so a model that holds it in ``model.extras`` saves and resumes
it with its state dict; the prompts themselves live in the prefix layers inside the backbone.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.pet.families import family
from clpeft.pet.inject import inject_pet
from clpeft.pet.prefix import PrefixConfig


def check_uniform_init(method: str, low: float, high: float) -> None:
    """A method's ``init_low``/``init_high`` options, checked where the user set them (before anything is built)."""
    if not high > low:
        raise ClpeftError(f"{method}'s prompts and keys are drawn from U(init_low, init_high): options.init_high must "
                          f"be > options.init_low (got {low}, {high}); e.g. --option init_low=0 --option init_high=1")


def check_prompt_per_experience(method: str, pool_size: int | None, experience_sizes: list[int] | None) -> None:
    """Methods that train one prompt per experience refuse, before anything is built, a pool smaller than the stream."""
    if experience_sizes and pool_size is not None and len(experience_sizes) > pool_size:
        raise ClpeftError(f"{method} trains one prompt per experience: {len(experience_sizes)} experiences need "
                          f"options.pool_size ≥ {len(experience_sizes)} (got {pool_size}); e.g. "
                          f"--option pool_size={len(experience_sizes)}")


class PromptPool(nn.Module):
    def __init__(self, backbone: nn.Module, size: int, length: int, blocks: list[int], key_dim: int,
                 attention: bool = False, init: tuple[float, float] = (0.0, 1.0), keys: bool = True):
        super().__init__()
        fam = family(backbone)
        if fam != "vit":
            raise ClpeftError(f"a prompt pool puts its prompts into the attention of a timm ViT, and this backbone is "
                              f"{'not one' if fam == 'unknown' else 'a ' + fam}; use a ViT backbone, e.g. "
                              "--backbone vit_tiny_fmnist (or any timm vit_* name)")
        if length % 2:
            raise ClpeftError(f"a prompt's length is split between keys and values; give an even length, got {length}")
        config = PrefixConfig(blocks=tuple(blocks), length=length // 2, compensatory=False, scale=1.0,
                              init_low=init[0], init_high=init[1])
        controller = inject_pet(backbone, config, name="p0")
        for i in range(1, size):
            controller.add(f"p{i}")
        controller.activate(None)
        object.__setattr__(self, "pet", controller)  # not a submodule: its layers live in the backbone
        self.size = size
        self.names = [f"p{i}" for i in range(size)]
        self.keys = nn.Parameter(torch.empty(size, key_dim).uniform_(*init)) if keys else None
        self.attention = nn.Parameter(torch.empty(size, key_dim).uniform_(*init)) if attention else None

    # ------------------------------------------------------------------ selection
    def similarity(self, query: torch.Tensor, upto: int | None = None, frozen_before: int = 0) -> torch.Tensor:
        """[B, P'] cosine similarities to the first ``upto`` keys (all by default); rows before ``frozen_before``
        take no gradient (earlier experiences' keys, as CODA-Prompt trains)."""
        def rows(t):
            t = t[:upto]
            return torch.cat([t[:frozen_before].detach(), t[frozen_before:]]) if frozen_before else t

        K = rows(self.keys)
        if self.attention is None:
            return F.normalize(query.float(), dim=-1) @ F.normalize(K.float(), dim=-1).T
        attended = torch.einsum("bd,kd->bkd", query.float(), rows(self.attention).float())
        return torch.einsum("bkd,kd->bk", F.normalize(attended, dim=-1), F.normalize(K.float(), dim=-1))

    def top_k(self, query: torch.Tensor, k: int, upto: int | None = None, batch_vote: bool = False):
        """(index [B, k], similarity [B, P']): each sample's k best instances, or the batch's k most voted."""
        sim = self.similarity(query, upto)
        index = sim.topk(min(k, sim.shape[1]), dim=1).indices
        if batch_vote:
            counts = torch.bincount(index.flatten(), minlength=sim.shape[1])
            voted = counts.topk(index.shape[1]).indices  # ties broken as torch.topk breaks them
            index = voted.unsqueeze(0).expand_as(index)
        return index, sim

    # ------------------------------------------------------------------ routing one forward
    @contextmanager
    def concatenated(self, index: torch.Tensor):
        with self.pet.concatenating(self.names, index):
            yield

    @contextmanager
    def weighted(self, weights: torch.Tensor):
        """Sample b gets Σ_m weights[b, m] · prompt_m over the first ``weights.shape[1]`` instances."""
        with self.pet.mixing(self.names[:weights.shape[1]], weights):
            yield

    @contextmanager
    def off(self):
        with self.pet.using(None):
            yield

    # ------------------------------------------------------------------ parameters
    def prompt_parameters(self, start: int = 0, stop: int | None = None) -> list[nn.Parameter]:
        return [p for name in self.names[start:stop] for p in self.pet.parameters(name)]

    def parameters_of(self, start: int = 0, stop: int | None = None) -> list[nn.Parameter]:
        """The prompts of instances [start, stop) and the pool's keys/attention (whole tensors)."""
        extra = [t for t in (self.keys, self.attention) if t is not None]
        return self.prompt_parameters(start, stop) + extra

    def prompt_matrix(self) -> torch.Tensor:
        """[P, …] every instance's tokens flattened (keys and values of every layer), in instance order."""
        return torch.stack([torch.cat([p.detach().reshape(-1) for p in self.pet.parameters(n)]) for n in self.names])

    @torch.no_grad()
    def gram_schmidt(self, start: int, stop: int, generator: torch.Generator | None = None) -> None:
        """Instances, keys and attention rows [start, stop) become random unit vectors orthogonal to each other
        and to the span of every row before them (each tensor flattened per instance); rows from ``stop`` on
        become 0 (CODA-Prompt's per-experience draw). Earlier rows have trained and are no longer orthonormal,
        so the span is taken by QR: exact, where projecting on each earlier row in turn is not."""
        def orthonormal(matrix: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(matrix, dtype=torch.float64)
            out[:start] = matrix[:start].double()
            old = out[:start]
            basis = torch.linalg.qr(old[old.norm(dim=1) > 1e-8].T).Q if start else out.new_zeros(matrix.shape[1], 0)
            for k in range(start, stop):
                v = torch.randn(matrix.shape[1], generator=generator, dtype=torch.float64)
                for _ in range(2):  # twice: orthogonal to working precision
                    v = v - basis @ (basis.T @ v)
                v = v / v.norm()
                out[k] = v
                basis = torch.cat([basis, v[:, None]], dim=1)
            return out.to(matrix.dtype)

        prompts = orthonormal(self.prompt_matrix().cpu())
        for i, name in enumerate(self.names):
            offset = 0
            for p in self.pet.parameters(name):
                p.copy_(prompts[i, offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        for tensor in (self.keys, self.attention):
            if tensor is not None:
                tensor.copy_(orthonormal(tensor.detach().cpu()))
