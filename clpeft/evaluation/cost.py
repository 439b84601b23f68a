"""Cost measures: parameters, wall time, peak memory."""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

import torch
from torch import nn


def count_parameters(model: nn.Module, trainable_parameters=None, pet=None) -> dict:
    """``total``; ``trainable``: what the strategy trains (its ``trainable_parameters()`` when given, else
    what has ``requires_grad``); ``pet``: one PET instance (the active one, or the first: one slot, mask or
    expert); ``pet_all_instances``: every instance together."""
    total = sum(p.numel() for p in model.parameters())
    trainable = (sum(p.numel() for p in trainable_parameters) if trainable_parameters is not None
                 else sum(p.numel() for p in model.parameters() if p.requires_grad))
    out = {"total": int(total), "trainable": int(trainable)}
    if pet is not None or trainable_parameters is not None:
        one = None if pet is None else pet.active or (pet.names[0] if pet.names else None)
        out["pet"] = int(pet.num_parameters(one)) if one is not None else 0
        out["pet_all_instances"] = int(sum(pet.num_parameters(n) for n in pet.names)) if pet is not None else 0
    return out


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@contextmanager
def timer(store: list, device: torch.device | None = None):
    """Append the wall time of the block (after synchronising CUDA) to ``store``."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    store.append(time.perf_counter() - start)
