"""The contract between a strategy and evaluation: what ``predict(x)`` returns for one test batch."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Prediction:
    """One batch's evaluation output.

    ``logits`` decide accuracy (argmax over the classes seen so far); ``features`` are what fed the
    head (test-time adaptation such as LAME needs them); ``views`` are extra named logits scored
    alongside, each with its own accuracy matrix (e.g. each member of an ensemble); ``task`` is the
    experience each sample was routed to, for methods that infer it (scored as task inference).
    """

    logits: torch.Tensor
    features: torch.Tensor | None = None
    views: dict[str, torch.Tensor] = field(default_factory=dict)
    task: torch.Tensor | None = None
