"""One run on several processes (``torchrun --nproc-per-node N -m clpeft run ...``): data parallel training.

Every rank draws the same global mini-batch (the single-process shuffle, same seed) and trains on its
slice of it (``idx[rank::world]``); each rank's loss is weighted by its share of the global batch and
the gradients are summed over ranks before every optimizer step, so a step is the single-process step
up to floating-point summation order (and BatchNorm statistics, which stay per rank). Global batches
smaller than the number of ranks (a last, ragged batch) are skipped on every rank.

Everything a strategy keeps outside the gradients (exemplar memory, prototypes, LAE's offline PET,
masks, retrieval keys) is computed by every rank from the whole experience and from parameters that are
identical across ranks, so it is identical by construction; ``assert_in_sync`` checks it after every
experience (all-gathered checksums of the model and the strategy state) and fails loudly otherwise.
Every rank evaluates; rank 0 alone writes results and checkpoints. gloo on CPU, NCCL on GPUs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from clpeft.errors import ClpeftError


def launched() -> bool:
    """True inside a torchrun launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_writer() -> bool:
    """Only rank 0 writes files (and prints); also outside the process group, from torchrun's RANK."""
    return rank() == 0 and int(os.environ.get("RANK", "0")) == 0


@contextmanager
def process_group(device: torch.device):
    """Join torchrun's process group for the duration of a run (no-op when not launched by torchrun)."""
    if not launched() or dist.is_initialized():
        yield device
        return
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ClpeftError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs; use --nproc-per-node ≤ GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
        dist.barrier()  # rank 0 has written the results when every rank leaves
    finally:
        dist.destroy_process_group()


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a global mini-batch."""
    return indices[rank()::world_size()]


def sum_gradients(params) -> None:
    """Sum every trainable parameter's gradient over the ranks (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _checksum(tensors) -> torch.Tensor:
    total = torch.zeros(2, dtype=torch.float64)
    for t in tensors:
        if torch.is_tensor(t) and t.numel() and (t.is_floating_point() or t.dtype in (torch.int64, torch.int32, torch.bool)):
            v = t.detach().to("cpu", torch.float64).reshape(-1)
            total[0] += v.sum()
            total[1] += (v * torch.arange(1, v.numel() + 1, dtype=torch.float64).remainder(97)).sum()
    return total


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            yield from _tensors(obj[key])
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)


def assert_in_sync(model: torch.nn.Module, strategy_state: dict, where: str) -> None:
    """All ranks hold the same model and strategy state, or a one-line error says where they diverged."""
    if world_size() == 1:
        return
    local = torch.stack([_checksum(model.state_dict().values()), _checksum(_tensors(strategy_state))])
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    gathered = [torch.zeros_like(local, device=backend_device) for _ in range(world_size())]
    dist.all_gather(gathered, local.to(backend_device))
    first = gathered[0].cpu()
    for r, other in enumerate(gathered[1:], start=1):
        if not torch.allclose(first, other.cpu(), rtol=1e-9, atol=1e-9):
            part = "model" if not torch.allclose(first[0], other.cpu()[0], rtol=1e-9, atol=1e-9) else "strategy state"
            raise ClpeftError(f"rank {r} {part} diverged from rank 0 {where}; this strategy is not DDP-safe, "
                              "run it on one process")
