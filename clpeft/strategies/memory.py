"""A class-balanced exemplar memory with iCaRL herding, usable by any strategy.

Budget: ``memory_size`` in total (m = memory_size // seen classes per class, re-cut as classes
arrive) or ``memory_per_class`` fixed. Selection: herding on L2-normalised, un-augmented features
of the current model; shrinking keeps each class's earliest herding picks (PyCIL's rule).

It is an Avalanche ``ExemplarsBuffer`` (``update(strategy)``, ``resize``, ``buffer``), so it also
plugs into Avalanche's ``ReplayPlugin(storage_policy=...)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.storage_policy import ExemplarsBuffer

from clpeft.errors import ClpeftError


def herding_order(features: torch.Tensor, m: int) -> list[int]:
    """Indices of the ``m`` samples whose running mean best tracks the class mean (iCaRL), in pick order:
    step k picks argmin_i ‖μ − (S + φ_i)/k‖ over unpicked i, with φ the L2-normalised features."""
    phi = F.normalize(features.double(), dim=-1)
    mu = phi.mean(0)
    chosen: list[int] = []
    running = torch.zeros_like(mu)
    available = torch.ones(len(phi), dtype=torch.bool)
    for k in range(1, min(m, len(phi)) + 1):
        dist = ((mu - (running + phi) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        running += phi[i]
    return chosen


class ExemplarMemory(ExemplarsBuffer):
    """Per-class exemplars as subsets of the experiences' datasets (no copies of the images)."""

    def __init__(self, memory_size: int | None = 2000, memory_per_class: int | None = None, batch_size: int = 256):
        if (memory_size is None) == (memory_per_class is None):
            raise ClpeftError("give exactly one of memory_size (total budget) or memory_per_class")
        if (memory_size if memory_size is not None else memory_per_class) < 1:
            raise ClpeftError("the exemplar budget must be at least 1")
        super().__init__(memory_size if memory_size is not None else 0)
        self.memory_size, self.memory_per_class, self.batch_size = memory_size, memory_per_class, batch_size
        self.classes: dict[int, object] = {}  # class → Avalanche dataset of its exemplars, herding order
        self.picks: dict[int, tuple[int, list[int]]] = {}  # class → (experience, indices): what a resume rebuilds from

    def per_class(self, n_classes: int) -> int:
        return self.memory_per_class if self.memory_per_class is not None else self.memory_size // max(1, n_classes)

    def __len__(self) -> int:
        return sum(len(d) for d in self.classes.values())

    @property
    def buffer(self):
        from avalanche.benchmarks.utils import concat_datasets

        parts = [self.classes[c] for c in sorted(self.classes)]
        return concat_datasets(parts) if parts else concat_datasets([])

    @buffer.setter
    def buffer(self, value):  # Avalanche's base class assigns an empty buffer on init
        pass

    def resize(self, strategy, new_size: int):
        self.memory_size, self.max_size = new_size, new_size
        self._shrink(self.per_class(len(self.classes)))

    def _shrink(self, m: int) -> None:
        for c, data in self.classes.items():
            if len(data) > m:
                self.classes[c] = data.subset(range(m))
                self.picks[c] = (self.picks[c][0], self.picks[c][1][:m])

    @torch.no_grad()
    def add_experience(self, strategy) -> None:
        """After an experience: shrink old classes to the new per-class quota, herd the new classes on the
        strategy's current features of the experience's data (test-time transforms)."""
        feats, labels = strategy.extract_features(strategy.experience_data, batch_size=self.batch_size)
        feats, labels = feats.cpu(), labels.cpu()
        new = sorted(set(labels.tolist()) - set(self.classes))
        m = self.per_class(len(self.classes) + len(new))
        self._shrink(m)
        for c in new:
            where = torch.nonzero(labels == c).flatten()
            picks = where[herding_order(feats[where], m)].tolist()
            self.classes[c] = strategy.experience_dataset.train().subset(picks)
            self.picks[c] = (int(strategy.experience_index), picks)

    def update(self, strategy, **kwargs):
        """Avalanche's storage-policy entry point (e.g. inside ``ReplayPlugin``), for clpeft strategies."""
        self.add_experience(strategy)

    def state_dict(self) -> dict:
        """What a checkpoint keeps: each class's (experience, indices); :meth:`rebuild` re-reads the samples."""
        return {int(c): (int(e), list(idx)) for c, (e, idx) in self.picks.items()}

    def load_state_dict(self, picks: dict) -> None:
        self.picks = {int(c): (int(e), list(idx)) for c, (e, idx) in picks.items()}

    def rebuild(self, train_stream) -> None:
        """The stored samples from the recorded picks (resuming a run): the same samples, no herding."""
        self.classes = {c: train_stream[e].dataset.train().subset(idx) for c, (e, idx) in self.picks.items()}
