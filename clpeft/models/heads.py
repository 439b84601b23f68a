"""A classifier head that grows one chunk per experience and never replaces old parameters.

Avalanche's ``IncrementalClassifier`` swaps its weight tensors when it grows (breaking optimizer
references and EMA copies) and grows during evaluation too; this head appends a new ``Linear``
only while training, so old chunks stay the same Parameter objects.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.models.dynamic_modules import DynamicModule
from torch import nn

# Logit given to classes with no head yet: softmax sends them to 0 and argmax never picks them.
UNSEEN_LOGIT = -1e4


class IncrementalHead(DynamicModule):
    """Logits over ``num_classes`` (the whole stream); classes without a chunk get ``UNSEEN_LOGIT``.

    ``cosine=True`` gives cosine similarity between normalised features and class weights times
    ``1/temperature`` (prototype classifiers). ``init_std`` draws new weights from N(0, init_std²)
    with zero bias (LAE uses 0.001); None keeps PyTorch's Linear init.
    """

    def __init__(self, in_features: int, num_classes: int, cosine: bool = False, temperature: float = 0.1,
                 init_std: float | None = None):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.cosine = cosine
        self.temperature = temperature
        self.init_std = init_std
        self.chunks = nn.ModuleList()

    @property
    def num_seen(self) -> int:
        return sum(chunk.out_features for chunk in self.chunks)

    def grow(self, n_new: int) -> nn.Linear:
        if self.num_seen + n_new > self.num_classes:
            raise ValueError(f"head has room for {self.num_classes} classes, asked for {self.num_seen + n_new}")
        ref = next(self.parameters(), None)
        chunk = nn.Linear(self.in_features, n_new, bias=not self.cosine)
        if self.init_std is not None:
            nn.init.normal_(chunk.weight, std=self.init_std)
            if chunk.bias is not None:
                nn.init.zeros_(chunk.bias)
        if ref is not None:
            chunk.to(ref.device)
        self.chunks.append(chunk)
        return chunk

    def ensure_classes(self, up_to: int) -> list[nn.Linear]:
        """Grow so that labels < ``up_to`` have logits; returns the new chunks."""
        new = []
        if up_to > self.num_seen:
            new.append(self.grow(up_to - self.num_seen))
        return new

    def adaptation(self, experience) -> None:
        """Avalanche hook: grow for the experience's classes, only in training (never during eval)."""
        if self.training:
            classes = getattr(experience, "classes_in_this_experience", None)
            if classes:
                self.ensure_classes(max(classes) + 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.cosine:
            features = F.normalize(features, dim=-1)
            parts = [F.linear(features, F.normalize(c.weight, dim=-1)) / self.temperature for c in self.chunks]
        else:
            parts = [chunk(features) for chunk in self.chunks]
        missing = self.num_classes - self.num_seen
        if missing:
            parts.append(features.new_full((features.shape[0], missing), UNSEEN_LOGIT))
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


@torch.no_grad()
def align_new_class_norms(head: IncrementalHead, n_old: int) -> float:
    """Weight Aligning (Zhao et al., 2020): scale the weight rows of classes ≥ ``n_old`` by
    γ = mean‖w_old‖ / mean‖w_new‖ so new classes stop out-voting old ones by norm alone.

    Biases are left as they are (as PyCIL does). Returns γ (1.0 when there is nothing to align).
    """
    if not head.chunks:
        return 1.0
    norms = torch.cat([chunk.weight.norm(dim=1) for chunk in head.chunks])
    if n_old <= 0 or n_old >= len(norms):
        return 1.0
    gamma = float(norms[:n_old].mean() / norms[n_old:].mean().clamp_min(1e-12))
    start = 0
    for chunk in head.chunks:
        end = start + chunk.out_features
        lo = max(start, n_old)
        if lo < end:
            chunk.weight[lo - start:] *= gamma
        start = end
    return gamma


class CosineLinear(nn.Module):
    """σ · cos(f, w_c) with a learnable σ (initialised to 1): the head first-session adaptation trains with
    (APER, RanPAC), before it is replaced by statistics. Grows like :class:`IncrementalHead`."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.uniform_(self.weight, -1.0 / in_features ** 0.5, 1.0 / in_features ** 0.5)
        self.sigma = nn.Parameter(torch.ones(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * F.linear(F.normalize(features, dim=-1), F.normalize(self.weight, dim=-1))


class PrototypeHead(nn.Module):
    """Cosine similarity to one stored vector per class (no parameters: buffers, saved with the model); classes
    without a vector yet get ``UNSEEN_LOGIT``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(num_classes, in_features))
        self.register_buffer("known", torch.zeros(num_classes, dtype=torch.bool))

    @torch.no_grad()
    def set(self, classes: torch.Tensor, vectors: torch.Tensor) -> None:
        self.prototypes[classes] = vectors.to(self.prototypes)
        self.known[classes] = True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = F.linear(F.normalize(features.float(), dim=-1), F.normalize(self.prototypes, dim=-1))
        return logits.masked_fill(~self.known, UNSEEN_LOGIT)


class RidgeHead(nn.Module):
    """``ReLU(f·W_rand)·W`` (or ``f·W`` without a projection): a random-feature ridge classifier whose W is solved
    in closed form from class statistics (buffers, saved with the model)."""

    def __init__(self, in_features: int, num_classes: int, projection: int, generator: torch.Generator | None = None):
        super().__init__()
        self.projection = projection
        width = projection or in_features
        rand = torch.randn(in_features, projection, generator=generator) if projection else torch.zeros(0)
        self.register_buffer("random", rand)
        self.register_buffer("weight", torch.zeros(width, num_classes))
        self.register_buffer("known", torch.zeros(num_classes, dtype=torch.bool))

    def expand(self, features: torch.Tensor) -> torch.Tensor:
        f = features.float()
        return torch.relu(f @ self.random) if self.projection else f

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.expand(features) @ self.weight
        return logits.masked_fill(~self.known, UNSEEN_LOGIT)
