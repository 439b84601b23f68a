"""Loss terms that several methods add to their cross-entropy (method-agnostic; each names who uses it)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_contrastive(features: torch.Tensor, class_means: torch.Tensor | None, tau: float = 0.8) -> torch.Tensor:
    """Push a batch's features apart from each other and from stored class means: the rows of M = [class means;
    features] each classify themselves among all rows, CE(M·Mᵀ/τ, identity), on unnormalised vectors (MOS's and
    HiDe-Prompt's term; ``class_means`` None or empty before any class has a mean). The means are constants."""
    rows = features.float() if class_means is None or len(class_means) == 0 else \
        torch.cat([class_means.detach().to(features.device, torch.float32), features.float()])
    sim = rows @ rows.T / tau
    return F.cross_entropy(sim, torch.arange(len(rows), device=rows.device))
