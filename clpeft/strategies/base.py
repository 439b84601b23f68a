"""The shared training loop: Avalanche's ``SupervisedTemplate`` plus what clpeft's methods all need.

What this base adds, each as a named hook a strategy file may override:

- ``trainable_parameters()``: what trains (all weights, PET + head, or head only); everything
  else gets ``requires_grad=False`` and stays out of the optimizer.
- ``make_optimizer()``: a fresh optimizer over exactly those parameters at every experience, so
  no stale momentum moves frozen weights (an Avalanche pitfall).
- ``criterion()``: cross-entropy over the logits of the seen classes (``loss_scope="seen"``) or of
  the current experience only (``"current"``); unseen classes never enter the softmax.
- ``predict(x) -> Prediction``: what evaluation calls: logits, the features feeding the head
  (for test-time adaptation such as LAME) and any extra named views (e.g. LAE's two experts).
- a fast in-memory training loader for streams held as tensors, with a seeded shuffle.

Strategies register with ``@register("name")`` and are looked up by name (no ``eval``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from tqdm.auto import tqdm

from clpeft import distributed
from clpeft.errors import ClpeftError
from clpeft.utils.device import autocast
from clpeft.utils.typed import dataclass_from_dict

STRATEGIES: dict[str, type] = {}
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSS_SCOPES = ("seen", "current")


def register(name: str):
    """Class decorator adding a strategy to the registry under ``name``."""

    def wrap(cls):
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ValueError(f"strategy {name!r} is registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def get_strategy(name: str) -> type:
    import clpeft.strategies  # noqa: F401 - registers the built-in strategies

    if name not in STRATEGIES:
        raise ClpeftError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))} (see `clpeft list`)")
    return STRATEGIES[name]


@dataclass
class TrainSettings:
    """Optimisation settings shared by every strategy (per-strategy extras go to ``options``)."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    eval_batch_size: int = 256
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    loss_scope: str = "seen"
    drop_last: bool = False

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ClpeftError(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.loss_scope not in LOSS_SCOPES:
            raise ClpeftError(f"unknown loss_scope {self.loss_scope!r}; use one of {', '.join(LOSS_SCOPES)}")
        if self.epochs < 0 or self.batch_size < 1 or self.eval_batch_size < 1 or self.lr <= 0:
            raise ClpeftError("epochs must be ≥ 0, batch sizes ≥ 1 and lr > 0; fix the strategy settings")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        return dataclass_from_dict(cls, values, "training setting")


@dataclass
class Prediction:
    """One batch's evaluation output: ``logits`` decide accuracy; ``features`` are what fed the head;
    ``views`` are extra named logits recorded alongside (e.g. each expert of an ensemble); ``task``
    is the experience each sample was routed to, for methods that infer it (scored as task inference)."""

    logits: torch.Tensor
    features: torch.Tensor | None = None
    views: dict[str, torch.Tensor] = field(default_factory=dict)
    task: torch.Tensor | None = None


class GlobalBatches:
    """Shuffled mini-batch indices, a new permutation (from ``generator``) per epoch.

    Under torchrun each rank yields its slice of every global batch (``clpeft.distributed``) and
    ``share`` holds that slice's fraction of the global batch, which weights the rank's loss.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False,
                 progress: str | None = None):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.drop_last, self.progress = drop_last, progress
        self.share = 1.0

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        perm = torch.randperm(self.n, generator=self.generator)
        world = distributed.world_size()
        steps = range(len(self))
        if self.progress:
            steps = tqdm(steps, desc=self.progress, leave=False, dynamic_ncols=True)
        for i in steps:
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
                 drop_last: bool = False, progress: str | None = None):
        self.tensors = tensors
        self.batches = GlobalBatches(len(tensors[0]), batch_size, generator, drop_last, progress)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for idx in self.batches:
            yield [t[idx] for t in self.tensors]


class CLStrategy(SupervisedTemplate):
    """Base of every clpeft strategy.

    ``trains``: ``"all"`` (every weight), ``"pet"`` (PET + head when a PET is injected, else all),
    or ``"head"`` (head only). ``pet``: the :class:`clpeft.pet.PETController` injected into the
    backbone, if any. ``options``: per-strategy settings from the scenario (checked by ``configure``).
    """

    name = "base"
    trains = "pet"
    accepts_pet = True
    #: Trains correctly under torchrun (``clpeft.distributed``): every piece of state outside the
    #: gradients is computed identically on every rank. Avalanche-plugin strategies are not.
    ddp_safe = True

    def __init__(self, *, model: nn.Module, settings: TrainSettings, device: torch.device, amp: str = "off",
                 pet=None, plugins=None, evaluator=None, seed: int = 0, in_memory: bool = False,
                 progress: bool = False, options: dict | None = None):
        if pet is not None and not self.accepts_pet:
            raise ClpeftError(f"strategy {self.name} does not train a PET module; drop --pet")
        self.settings = settings
        self.amp = amp
        self.pet = pet
        self.seed = seed
        self.in_memory = in_memory
        self.progress = progress
        self.configure(**(options or {}))
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=settings.lr)
        super().__init__(
            model=model, optimizer=placeholder, criterion=nn.CrossEntropyLoss(),
            train_mb_size=settings.batch_size, train_epochs=settings.epochs,
            eval_mb_size=settings.eval_batch_size, device=device, plugins=plugins,
            evaluator=evaluator, eval_every=-1,
        )
        self._autocast_device = torch.device(device)

    # ------------------------------------------------------------------ hooks for strategy files
    def configure(self, **options) -> None:
        """Take per-strategy options; the base has none, so any option is a user error."""
        if options:
            raise ClpeftError(f"strategy {self.name} has no option {sorted(options)[0]!r}; remove it from the scenario (or --option)")

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        head = list(self.model.head.parameters())
        if self.trains == "head":
            return head
        if self.trains == "pet" and self.pet is not None:
            return list(self.pet.parameters()) + head
        return list(self.model.parameters())

    def predict(self, x: torch.Tensor) -> Prediction:
        with autocast(self._autocast_device, self.amp):
            features = self.model.features(x)
            return Prediction(logits=self.model.head(features), features=features)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x).logits

    # ------------------------------------------------------------------ resume (clpeft.checkpoint)
    #: Strategies whose whole state is captured by ``resume_state`` (Avalanche plugins' is not).
    resumable = True

    def resume_state(self) -> dict:
        """What to save after an experience besides the model's tensors: the model's *structure* (head
        chunks, PET instances) and the Avalanche clock. Strategy files add their own fields."""
        return {"head_chunks": [chunk.out_features for chunk in self.model.head.chunks],
                "pet_instances": list(self.pet.names) if self.pet is not None else [],
                "pet_active": self.pet.active if self.pet is not None else None,
                "clock": {k: v for k, v in vars(self.clock).items() if isinstance(v, int)}}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        """Rebuild the saved structure, then load the model's tensors into it (``train_stream``: for
        strategies that keep data of earlier experiences)."""
        if not self.resumable:
            raise ClpeftError(f"strategy {self.name} cannot resume (its state lives in Avalanche plugins); rerun it from the start")
        for size in state["head_chunks"][len(self.model.head.chunks):]:
            self.model.head.grow(size)
        if self.pet is not None:
            for name in state["pet_instances"]:
                if name not in self.pet.names:
                    self.pet.add(name)
            for name in [n for n in self.pet.names if n not in state["pet_instances"]]:
                self.pet.remove(name)
            self.pet.activate(state["pet_active"])
        self._before_model_state_load(state)
        self.model.load_state_dict(model_state)
        for key, value in state["clock"].items():
            setattr(self.clock, key, value)

    def _before_model_state_load(self, state: dict) -> None:
        """Hook: create buffers the saved model state has and a fresh model lacks (e.g. cached masks)."""

    def summary(self) -> dict:
        """Method-specific facts to record in the results file (e.g. mask overlaps); none by default."""
        return {}

    #: True when the model itself changes with the task (a mask or expert per experience): task-IL
    #: evaluation then calls ``predict_given_task`` with each sample's true experience.
    task_conditioned = False

    def predict_given_task(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        raise ClpeftError(f"strategy {self.name} does not condition its model on the task id")

    def loss_range(self) -> tuple[int, int]:
        """Logit columns entering the loss: [0, seen) or the current experience's [start, end)."""
        classes = self.experience.classes_in_this_experience
        if self.settings.loss_scope == "current":
            return min(classes), max(classes) + 1
        return 0, self.model.head.num_seen

    # ------------------------------------------------------------------ Avalanche overrides
    def forward(self):
        with autocast(self._autocast_device, self.amp):
            return self.model(self.mb_x)

    def training_epoch(self, **kwargs):
        self._loss_finite = torch.ones((), dtype=torch.bool, device=self.device)
        super().training_epoch(**kwargs)
        if not bool(self._loss_finite):  # checked once per epoch: no host sync per step
            raise ClpeftError(f"the training loss became NaN or infinite in experience {self.clock.train_exp_counter} "
                              f"(epoch {self.clock.train_exp_epochs}); lower the learning rate, or use --amp off")

    def backward(self):
        self._loss_finite &= torch.isfinite(self.loss.detach()).all()
        if distributed.world_size() > 1:  # this rank's share of the global batch's mean loss
            (self.loss * self._batches.share).backward(retain_graph=self.retain_graph)
        else:
            super().backward()

    def optimizer_step(self):
        if distributed.world_size() > 1:
            distributed.sum_gradients([p for group in self.optimizer.param_groups for p in group["params"]])
        super().optimizer_step()

    def criterion(self):
        if not self.is_training:
            return F.cross_entropy(self.mb_output.float(), self.mb_y)
        start, end = self.loss_range()
        return F.cross_entropy(self.mb_output[:, start:end].float(), self.mb_y - start)

    def model_adaptation(self, model=None):
        model = super().model_adaptation(model)
        if self.is_training:
            trainable = {id(p) for p in self.trainable_parameters()}
            for p in self.model.parameters():
                p.requires_grad_(id(p) in trainable)
        return model

    def make_optimizer(self, **kwargs):
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        s = self.settings
        if not params:
            params = [nn.Parameter(torch.zeros(1, device=self.device))]  # nothing to train (e.g. prototypes)
        if s.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        elif s.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
        self.optimized_param_id = {id(p) for p in params}  # tells Avalanche not to rebuild it again

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False,
                              drop_last=False, **kwargs):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.clock.train_exp_counter)
        label = f"{self.name} exp {self.clock.train_exp_counter}" if self.progress else None
        if not self.in_memory and distributed.world_size() > 1:
            batches = GlobalBatches(len(self.adapted_dataset), self.settings.batch_size, generator,
                                    self.settings.drop_last, label)
            self.dataloader = torch.utils.data.DataLoader(self.adapted_dataset, batch_sampler=batches,
                                                          num_workers=num_workers, pin_memory=bool(pin_memory))
            self._batches = batches
            return
        if not self.in_memory:
            return super().make_train_dataloader(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                                                 persistent_workers=persistent_workers,
                                                 drop_last=self.settings.drop_last, **kwargs)
        from clpeft.streams.stream import materialize

        x, y = materialize(self.adapted_dataset)
        t = torch.full_like(y, int(self.experience.task_label))
        self.dataloader = TensorBatches((x, y, t), self.settings.batch_size, generator, self.settings.drop_last, label)
        self._batches = self.dataloader.batches
