"""Seeding every RNG a run touches, so that the same seed on the same machine gives the same file."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    # cuBLAS is deterministic only with a fixed workspace; it reads this when its first handle is made
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def seeded_generator(seed: int, offset: int, device=None) -> torch.Generator:
    """A generator seeded with ``seed * 1000 + offset``: its draws depend only on the run's seed and the purpose
    (``offset``, one per use), never on how many draws the global RNG served before. Offsets in use: the training
    batches of experience t (t), their device augmentation (t + 7), and each method's own (its file says which)."""
    return torch.Generator(device=device or "cpu").manual_seed(seed * 1000 + offset)
