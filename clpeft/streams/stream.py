"""Class-incremental (B0-IncN, Bk-IncN) and task-incremental streams as Avalanche benchmarks.

Labels are renumbered in class order (Avalanche's ``class_ids_from_zero_from_first_exp``), so the
classes of experience ``e`` are a contiguous range and a head can grow one chunk per experience.
:class:`ContinualStream` keeps the Avalanche benchmark (so Avalanche's own strategies run on it)
and adds what Avalanche lacks: the class ranges, and evaluation batches that are mixed-class and
shuffled with a fixed generator instead of Avalanche's class-sorted ones.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clpeft.errors import ClpeftError
from clpeft.streams.datasets import InputSpec, dataset_spec
from clpeft.config import EVAL_ORDERS, StreamConfig  # noqa: F401 - part of this module's API

def eval_permutation(labels: torch.Tensor, batch_size: int, order: str, seed: int, alpha: float = 0.1) -> torch.Tensor:
    """The order in which test samples are met, cut into batches of ``batch_size`` afterwards.

    ``iid``: a seeded shuffle, every batch mixes classes. ``class_grouped``: shuffled, then classes
    played one after the other (in a seeded random class order) — non-i.i.d. as deployments see it.
    ``dirichlet``: each batch draws class proportions from Dir(α): α → 0 approaches class-grouped,
    α → ∞ approaches i.i.d.
    """
    if order not in EVAL_ORDERS:
        raise ClpeftError(f"unknown eval_order {order!r}; use one of {', '.join(EVAL_ORDERS)}")
    gen = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=gen)
    if order == "iid":
        return shuffled
    classes = torch.unique(labels)
    if order == "class_grouped":
        rank = torch.empty(int(labels.max()) + 1, dtype=torch.long)
        rank[classes] = torch.randperm(len(classes), generator=gen)
        return shuffled[torch.argsort(rank[labels[shuffled]], stable=True)]
    if not alpha > 0:
        raise ClpeftError(f"dirichlet_alpha must be > 0, got {alpha}")
    rng = np.random.RandomState(seed)
    pools = {int(c): shuffled[labels[shuffled] == c].tolist() for c in classes}
    out: list[int] = []
    while len(out) < len(labels):
        live = [c for c in pools if pools[c]]
        weights = dict(zip(live, rng.dirichlet(np.full(len(live), alpha))))
        for _ in range(min(batch_size, len(labels) - len(out))):
            live = [c for c in live if pools[c]]
            p = np.array([weights[c] for c in live]) + 1e-12
            out.append(pools[live[rng.choice(len(live), p=p / p.sum())]].pop())
    return torch.tensor(out)


def class_order(num_classes: int, seed: int | None) -> list[int]:
    if seed is None:
        return list(range(num_classes))
    return np.random.RandomState(seed).permutation(num_classes).tolist()


def check_class_order(order: list[int], num_classes: int) -> None:
    if sorted(order) != list(range(num_classes)):
        raise ClpeftError(f"stream.class_order must list each of the {num_classes} classes 0..{num_classes - 1} exactly "
                          f"once; got {len(order)} entries" + ("" if len(order) != num_classes else " with repeats or "
                                                                "out-of-range ids"))


def experience_sizes(num_classes: int, n_experiences: int, first: int | None) -> list[int]:
    """Classes per experience; raises a ClpeftError naming valid choices when they do not divide."""
    if n_experiences < 1:
        raise ClpeftError(f"n_experiences must be at least 1, got {n_experiences}")
    if first is None:
        if num_classes % n_experiences:
            valid = [n for n in range(1, num_classes + 1) if num_classes % n == 0]
            near = min(valid, key=lambda n: (abs(n - n_experiences), n))
            raise ClpeftError(
                f"n_experiences={n_experiences} does not divide the {num_classes} classes; "
                f"use one of {valid} (e.g. stream.n_experiences: {near}) or set first_experience_classes"
            )
        return [num_classes // n_experiences] * n_experiences
    rest = num_classes - first
    if not 0 < first <= num_classes or (n_experiences == 1 and rest) or (n_experiences > 1 and (rest <= 0 or rest % (n_experiences - 1))):
        raise ClpeftError(
            f"first_experience_classes={first} with n_experiences={n_experiences} does not split {num_classes} classes; "
            f"the remaining {rest} classes must divide into n_experiences-1 equal experiences"
        )
    return [first] + [rest // (n_experiences - 1)] * (n_experiences - 1)


def single_class_fix(sizes: list[int], scope: str) -> str:
    """The stream settings that give every loss at least 2 classes, each one named with a value that splits."""
    num_classes, n = sum(sizes), len(sizes)
    if scope == "current":
        fits = [m for m in range(1, n + 1) if num_classes % m == 0 and num_classes // m >= 2]
        if not fits:
            return f"the data set's {num_classes} classes are too few for 2 classes per experience"
        m = max(fits)
        drop = " and drop stream.first_experience_classes" if len(set(sizes)) > 1 else ""
        return f"set stream.n_experiences: {m} ({num_classes // m} classes each){drop}"
    rest = num_classes - 2
    fits = [m for m in range(2, n + 1) if rest > 0 and rest % (m - 1) == 0]
    if not fits:
        return "set stream.n_experiences: 1"
    m = max(fits)
    return (f"set stream.first_experience_classes: 2 with stream.n_experiences: {m} (the other {rest} classes in "
            f"{m - 1} experience{'s' if m > 2 else ''} of {rest // (m - 1)})")


@dataclass
class ContinualStream:
    """An Avalanche benchmark plus the facts clpeft's loop needs."""

    name: str
    benchmark: object
    input_spec: InputSpec
    class_ranges: list[tuple[int, int]]  # [start, end) of renumbered labels per experience
    original_class_order: list[int]
    config: StreamConfig
    in_memory: bool = False
    batch_train_transform: object = None  # (uint8 batch, generator) -> float batch, on the device
    batch_eval_transform: object = None   # uint8 batch -> float batch, on the device
    _test_cache: tuple | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return self.class_ranges[-1][1]

    @property
    def n_experiences(self) -> int:
        return len(self.class_ranges)

    @property
    def train_stream(self):
        return self.benchmark.train_stream

    @property
    def test_stream(self):
        return self.benchmark.test_stream

    def experience_of_label(self, labels: torch.Tensor) -> torch.Tensor:
        ends = torch.tensor([end for _, end in self.class_ranges])
        return torch.bucketize(labels, ends, right=True)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """All test data as (x, y, experience) tensors, for in-memory streams (cached)."""
        if not self.in_memory:
            return None
        if self._test_cache is None:
            xs, ys = [], []
            for exp in self.test_stream:
                x, y = materialize(exp.dataset)
                xs.append(x)
                ys.append(y)
            y = torch.cat(ys)
            self._test_cache = (torch.cat(xs), y, self.experience_of_label(y))
        return self._test_cache

    def eval_batches(self, batch_size: int, seed: int, order: str | None = None, num_workers: int = 2,
                     experiences: list[int] | None = None) -> Iterator[tuple]:
        """Batches of (x, y, experience) over the test set (``experiences``: only theirs; None: all), in ``order``
        (see :func:`eval_permutation`)."""
        order = order or self.config.eval_order
        cached = self.test_set()
        if cached is not None:
            x, y, e = cached
            if experiences is None:
                perm = eval_permutation(y, batch_size, order, seed, self.config.dirichlet_alpha)
            else:  # indices into the cache, not a copy of its part: batch-sized allocations only
                keep = torch.isin(e, torch.as_tensor(experiences, dtype=e.dtype)).nonzero().squeeze(1)
                perm = keep[eval_permutation(y[keep], batch_size, order, seed, self.config.dirichlet_alpha)]
            for start in range(0, len(perm), batch_size):
                idx = perm[start:start + batch_size]
                yield x[idx], y[idx], e[idx]
            return
        chosen = range(self.n_experiences) if experiences is None else experiences
        datasets = [self.test_stream[j].dataset for j in chosen]
        labels = torch.cat([torch.as_tensor(list(d.targets)) for d in datasets]).long()
        perm = eval_permutation(labels, batch_size, order, seed, self.config.dirichlet_alpha)
        dataset = torch.utils.data.Subset(torch.utils.data.ConcatDataset(datasets), perm.tolist())
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                persistent_workers=False, pin_memory=torch.cuda.is_available()):
            x, y = batch[0], batch[1]
            yield x, y, self.experience_of_label(y)


def materialize(dataset: Dataset, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack an (Avalanche) dataset into tensors with one pass. Only for data without random transforms."""
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys).long()


def make_stream(config: StreamConfig, seed: int = 0) -> ContinualStream:
    """Build the stream (``seed``: the run's, for ``class_order_seed: seed``); every failure is a ClpeftError."""
    spec = dataset_spec(config.dataset)
    if config.eval_order not in EVAL_ORDERS:
        raise ClpeftError(f"unknown eval_order {config.eval_order!r}; use one of {', '.join(EVAL_ORDERS)}")
    from avalanche.benchmarks import nc_benchmark

    train, test, input_spec = spec.loader(root=config.root, download=config.download, image_size=config.image_size,
                                          augmentation=config.augmentation, device_augment=config.device_augment)
    batch_train = batch_eval = None
    if config.device_augment:
        if not getattr(train, "uint8_images", False):
            raise ClpeftError(f"stream.device_augment keeps uint8 images on the device; {config.dataset} does not "
                              "provide them (cifar100 does)")
        if config.augmentation != "resized_crop":
            raise ClpeftError("stream.device_augment implements augmentation: resized_crop; drop one of them")
        from functools import partial

        from clpeft.streams.device_augment import center_crop_resize, random_resized_crop

        batch_train = partial(_train_crop, random_resized_crop, config.image_size)
        batch_eval = partial(center_crop_resize, size=config.image_size)
    num_classes = len(set(train.targets))
    if config.validation_fraction > 0:
        if config.device_augment:
            raise ClpeftError("stream.validation_fraction holds out part of the training set, which device_augment "
                              "does not support; drop one of them")
        train, test = held_out(train, test, config.validation_fraction)
    sizes = experience_sizes(num_classes, config.n_experiences, config.first_experience_classes)
    if config.class_order is not None:
        check_class_order(config.class_order, num_classes)
        order = list(config.class_order)
    else:
        order = class_order(num_classes, seed if config.class_order_seed == "seed" else config.class_order_seed)
    per_exp = {0: sizes[0]} if config.first_experience_classes is not None else None
    benchmark = nc_benchmark(
        train, test,
        n_experiences=config.n_experiences,
        task_labels=config.task_incremental,
        shuffle=False,
        fixed_class_order=order,
        per_exp_classes=per_exp,
        class_ids_from_zero_from_first_exp=True,
    )
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    ranges = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return ContinualStream(
        name=config.dataset, benchmark=benchmark, input_spec=input_spec, class_ranges=ranges,
        original_class_order=order, config=config, in_memory=bool(getattr(train, "in_memory", False)),
        batch_train_transform=batch_train, batch_eval_transform=batch_eval,
    )


class Subset(Dataset):
    """Part of a data set, keeping what a stream reads from the whole (``targets``, ``in_memory``)."""

    def __init__(self, base: Dataset, indices: list[int]):
        self.base, self.indices = base, list(indices)
        self.targets = [base.targets[i] for i in self.indices]
        self.in_memory = bool(getattr(base, "in_memory", False))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[self.indices[index]]


def held_out(train: Dataset, test: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """(training part, validation part): ``fraction`` of each class's training samples, drawn with a fixed seed
    (independent of the run seed, so every run of a tuning protocol sees one split), read with the test set's
    transform where the data set has one. The test set is not used."""
    targets = np.asarray(train.targets)
    rng = np.random.default_rng(0)
    keep, held = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        n = int(round(fraction * len(idx)))
        if n < 1 or n >= len(idx):
            raise ClpeftError(f"stream.validation_fraction={fraction} holds out {n} of class {int(c)}'s {len(idx)} "
                              "training samples; use a fraction that leaves at least one on each side, e.g. 0.2")
        chosen = rng.permutation(idx)
        held += sorted(chosen[:n].tolist())
        keep += sorted(chosen[n:].tolist())
    validation = train
    if hasattr(train, "transform") and hasattr(test, "transform"):  # the held-out images read as test images
        validation = copy.copy(train)
        validation.transform = test.transform
    return Subset(train, sorted(keep)), Subset(validation, sorted(held))


def stream_identity(dataset: str, order: list[int], sizes: list[int], validation_fraction: float) -> dict:
    """What makes two streams the same stream for a tuning protocol: the data, the class order, the cut into
    experiences and which split is evaluated."""
    return {"dataset": dataset, "class_order": [int(c) for c in order], "experience_sizes": [int(n) for n in sizes],
            "evaluated_on": f"validation {validation_fraction:g} of train" if validation_fraction else "test"}


def identity_of_config(config: StreamConfig, seed: int) -> dict:
    """The identity of the stream a run with ``seed`` gets, without training (the data set is read only when its class
    count is not known beforehand)."""
    num_classes = dataset_spec(config.dataset).num_classes
    if num_classes is None:
        built = make_stream(config, seed)
        return stream_identity(config.dataset, built.original_class_order, [b - a for a, b in built.class_ranges],
                               config.validation_fraction)
    sizes = experience_sizes(num_classes, config.n_experiences, config.first_experience_classes)
    order = list(config.class_order) if config.class_order is not None else class_order(
        num_classes, seed if config.class_order_seed == "seed" else config.class_order_seed)
    return stream_identity(config.dataset, order, sizes, config.validation_fraction)


def identity_of_results(results: dict) -> dict:
    """The identity of the stream a results file was measured on."""
    s = results["stream"]
    return stream_identity(s["name"], s["class_order"], [b - a for a, b in s["class_ranges"]],
                           results["config"]["stream"].get("validation_fraction", 0.0))


def _train_crop(crop, size, images, generator):
    return crop(images, size, generator)


def stream_from_benchmark(benchmark, name: str, input_spec: InputSpec, config: StreamConfig | None = None) -> ContinualStream:
    """An Avalanche benchmark built elsewhere, checked so that its accuracy matrix means what clpeft's does.

    Needs: as many test experiences as training ones; class ids contiguous from 0 and in experience order
    (experience ``e`` holds classes [start_e, end_e), as ``class_ids_from_zero_from_first_exp`` gives);
    each test experience holding exactly its training experience's classes."""
    train_stream, test_stream = list(benchmark.train_stream), list(benchmark.test_stream)
    if not train_stream or len(train_stream) != len(test_stream):
        raise ClpeftError(f"the benchmark has {len(train_stream)} training and {len(test_stream)} test experiences; "
                          "clpeft needs one test experience per training experience")
    ranges, start = [], 0
    for i, (tr, te) in enumerate(zip(train_stream, test_stream)):
        classes = sorted(int(c) for c in tr.classes_in_this_experience)
        if classes != list(range(start, start + len(classes))):
            raise ClpeftError(f"training experience {i} holds classes {classes[:6]}…, expected a contiguous range from "
                              f"{start}; build the benchmark with class_ids_from_zero_from_first_exp=True")
        test_classes = sorted(int(c) for c in te.classes_in_this_experience)
        if test_classes != classes:
            raise ClpeftError(f"test experience {i} holds classes {test_classes[:6]}…, its training experience "
                              f"{classes[:6]}…; the test stream must mirror the training stream")
        ranges.append((start, start + len(classes)))
        start += len(classes)
    config = config or StreamConfig(dataset=name, n_experiences=len(ranges))
    return ContinualStream(name=name, benchmark=benchmark, input_spec=input_spec, class_ranges=ranges,
                           original_class_order=list(range(start)), config=config, in_memory=False)
