"""Seeded mini-batches over a run's training data, sharded per rank under torchrun."""
from __future__ import annotations

from typing import Iterator

import torch

from clpeft import distributed


class GlobalBatches:
    """Shuffled mini-batch indices, a new permutation (from ``generator``) per epoch.

    Under torchrun each rank yields its slice of every global batch (``clpeft.distributed``) and
    ``share`` holds that slice's fraction of the global batch, which weights the rank's loss.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.drop_last = drop_last
        self.share = 1.0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator)
        world = distributed.world_size()
        for i in range(len(self)):
            idx = perm[i * self.batch_size:(i + 1) * self.batch_size]
            if world > 1:
                if len(idx) < world:  # too few samples to give every rank one: skipped on all ranks
                    continue
                local = distributed.shard(idx)
                self.share = len(local) / len(idx)
                idx = local
            yield idx


class TensorBatches:
    """Shuffled mini-batches over in-memory tensors (indices from :class:`GlobalBatches`)."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, generator: torch.Generator,
                 drop_last: bool = False):
        self.tensors = tensors
        self.batches = GlobalBatches(len(tensors[0]), batch_size, generator, drop_last)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for idx in self.batches:
            yield [t[idx] for t in self.tensors]
