"""clpeft's method API: a strategy file says only what differs from the shared loop.

A method is a subclass of :class:`CLStrategy` registered with ``@register("name")``. It declares:

- ``trains``: ``"pet"`` (the default: PET + head, every weight without a PET), ``"all"`` or ``"head"``;
  ``trains_in``: ``"every"`` experience, only the ``"first"``, or ``"none"`` (closed-form methods);
- ``accepts_pet`` (True, False, or the PET kinds it works with) and ``requires_pet``;
- ``loss_scope``: ``"current"`` when its loss covers only the current experience's classes (None: the run's);
- ``Options``: a dataclass of its settings (:func:`clpeft.utils.typed.option`), checked before anything is built;
- ``keeps``: the attributes a checkpoint saves and ``--resume`` restores (tensors, numbers, strings, lists/dicts
  of them, generators, objects with ``state_dict``); what derives from them is rebuilt in ``after_resume``;
- ``task_conditioned`` / ``resumable`` / ``ddp_safe``: what evaluation, resume and torchrun may expect,

and overrides only the hooks it needs, in the order they run::

    setup()                                   once, options in self.options
    before_experience()                       before the experience's data, head and optimizer are made
    training_data(dataset) -> dataset         what trains in this experience (e.g. + exemplars)
    phases() -> [Phase]                       named training phases (default: one "train" phase of train.epochs)
    trainable_parameters()                    what trains (per phase); the rest is frozen
    optimizer_groups(params) / make_scheduler(optimizer, phase)
    start_phase() ... end_phase()             around each phase's epochs
    before_epoch() / after_epoch()
    training_logits(x) -> logits              the training forward
    training_loss(logits, y, x) -> loss       default: cross-entropy over the loss scope's classes
    after_backward() / after_step()
    after_experience()
    predict(x) -> Prediction                  evaluation (predict_given_task for task-IL when conditioned)
    prepare_model_state(state) / after_resume(train_stream)   around loading a checkpoint
    summary() / report_metrics()              method-specific facts (results file) and scalars (report)

The loop that calls them (:mod:`clpeft.strategies._engine`) owns mixed precision, the optimizer, torchrun gradient
sums, seeded batches and the checks that no training silently did nothing. ``docs/write_a_method.md`` lists what a
hook may read (``model``, ``pet``, ``settings``, ``options``, ``experience_index``, ``phase``, …) and the helpers.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clpeft.config import TrainSettings
from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.streams.stream import single_class_fix
from clpeft.strategies._engine import Engine
from clpeft.strategies.registry import register  # noqa: F401 - part of the API a method file imports
from clpeft.utils.device import autocast
from clpeft.utils.seed import seeded_generator
from clpeft.utils.typed import dataclass_from_dict


@dataclass
class Phase:
    """A named stretch of training inside an experience, with its own epochs, learning rate and optimizer."""

    name: str
    epochs: int
    lr: float | None = None  # None: train.lr


@dataclass
class NoOptions:
    """Options of a strategy that has none: any option given is an error."""


class CLStrategy(Engine):
    """Base of every clpeft strategy (see the module docstring for the method API)."""

    name = "base"
    trains = "pet"
    trains_in = "every"
    accepts_pet: bool | tuple = True
    requires_pet = False
    loss_scope: str | None = None
    task_conditioned = False
    #: Attributes saved in every checkpoint and restored on ``--resume`` (see ``after_resume``).
    keeps: tuple[str, ...] = ()
    #: Strategies whose whole state is the model, the declared ``keeps`` and ``after_resume`` (Avalanche plugins' is not).
    resumable = True
    #: Trains correctly under torchrun (``clpeft.distributed``): every piece of state outside the
    #: gradients is computed identically on every rank. Avalanche-plugin strategies are not.
    ddp_safe = True
    Options = NoOptions
    #: ``"summed"``: the method predicts with Σ_k w_k·instance_k over a growing bank of LoRA instances, which
    #: ``train.bank_budget`` may cap by folding the oldest into the weights (``fold_over_budget``); None refuses it.
    bank: str | None = None
    #: False: train from Avalanche's data loader even on in-memory streams (plugins that swap the loader)
    tensor_batches = True

    # ================================================================== declarations checked up front
    @classmethod
    def parse_options(cls, values: dict):
        """The strategy's typed options from a mapping (unknown keys, wrong types and bad ranges are errors)."""
        from dataclasses import fields

        if not isinstance(values, dict):
            raise ClpeftError(f"options of strategy {cls.name} must be a mapping, got {type(values).__name__}")
        known = sorted(f.name for f in fields(cls.Options))
        unknown = sorted(set(map(str, values)) - set(known))
        if unknown:
            raise ClpeftError(f"strategy {cls.name} has no option {unknown[0]!r}; "
                              + (f"its options: {', '.join(known)}" if known else "it takes none")
                              + f" (see `clpeft list --options {cls.name}`)")
        return dataclass_from_dict(cls.Options, values, f"option of strategy {cls.name}", "options")

    @classmethod
    def check_pet(cls, kind: str | None) -> None:
        if kind is None:
            if cls.requires_pet:
                kinds = cls.accepts_pet if isinstance(cls.accepts_pet, tuple) else ("adapter", "lora")
                raise ClpeftError(f"{cls.name} needs a PET module; pass --pet {' | '.join(kinds)}")
            return
        if cls.accepts_pet is False:
            raise ClpeftError(f"strategy {cls.name} does not train a PET module; drop --pet")
        if isinstance(cls.accepts_pet, tuple) and kind not in cls.accepts_pet:
            raise ClpeftError(f"{cls.name} works with --pet {' | '.join(cls.accepts_pet)}, not {kind}")

    @classmethod
    def effective_loss_scope(cls, settings: TrainSettings) -> str:
        return cls.loss_scope or settings.loss_scope

    @classmethod
    def training_experiences(cls, n_experiences: int) -> list[int]:
        """Experiences in which the strategy takes gradient steps."""
        return {"every": list(range(n_experiences)), "first": [0][:n_experiences], "none": []}[cls.trains_in]

    @classmethod
    def check_config(cls, options, settings: TrainSettings) -> None:
        """Hook: refuse settings that make the method degenerate (raise ClpeftError naming the fix)."""

    @classmethod
    def check_run(cls, options, settings: TrainSettings, experience_sizes: list[int] | None) -> list[int]:
        """Everything known before any data or model is built: the method's own rules, then the base's.
        Returns the experiences whose training is skipped because their loss covers one class.

        A cross-entropy over one logit is identically zero, so an experience whose loss covers a single class
        learns nothing. With the seen classes in the loss (a 10 × 1 stream's experience 0) that is harmless when a
        later experience trains: the class is learned there, and the run says it skipped the empty phase. It is
        refused where some class would never enter a loss that can learn; 0 epochs leave the new head as drawn."""
        cls.check_config(options, settings)
        if settings.bank_budget is not None and cls.bank is None:
            from clpeft.strategies.registry import STRATEGIES

            summed = sorted(name for name, c in STRATEGIES.items() if getattr(c, "bank", None))
            raise ClpeftError(f"{cls.name} keeps no summed bank of instances, so train.bank_budget cannot cap it; drop "
                              f"it (it serves {', '.join(summed)})")
        trained = cls.training_experiences(len(experience_sizes) if experience_sizes else 1)
        if trained and settings.epochs == 0:
            raise ClpeftError(f"{cls.name} learns by gradient steps but train.epochs is 0, so nothing would train; "
                              "set train.epochs ≥ 1")
        if not experience_sizes:
            return []
        scope = cls.effective_loss_scope(settings)
        seen = np.cumsum(experience_sizes).tolist()
        width = {i: experience_sizes[i] if scope == "current" else seen[i] for i in trained}
        empty = [i for i in trained if width[i] < 2]
        for i in empty:
            if scope == "current" or not any(j > i and width[j] >= 2 for j in trained):
                raise ClpeftError(f"{cls.name} trains experience {i} on a cross-entropy over its {scope} classes, "
                                  f"which is 1 class: the loss is identically 0 and that class can never be learned; "
                                  + single_class_fix(experience_sizes, scope))
        return empty

    # ================================================================== hooks for strategy files
    def setup(self) -> None:
        """Once, before training: build what the method keeps (``self.options`` holds its settings)."""

    def avalanche_plugins(self) -> list:
        """Avalanche plugins the method runs on (e.g. EWC's); they run with the loop like user plugins."""
        return []

    def before_experience(self) -> None:
        """Before the experience's data, head and optimizer are prepared (``experience_index`` is set)."""

    def training_data(self, dataset):
        """The data trained on in this experience (default: the experience's own)."""
        return dataset

    def phases(self) -> list[Phase]:
        """The experience's training phases; an empty list means no gradient training."""
        if self.experience_index not in self.training_experiences(self.experience_index + 1):
            return []
        return [Phase("train", self.settings.epochs)]

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """What trains (per phase; also called with no phase, after training, to count parameters)."""
        head = list(self.model.head.parameters())
        if self.trains == "head":
            return head
        if self.trains == "pet":
            return self.body_parameters() + head
        return list(self.model.parameters())

    def optimizer_groups(self, params: list[nn.Parameter]) -> list[dict]:
        """Parameter groups (e.g. a slower rate for the backbone); default one group at the phase's rate."""
        return [{"params": params}]

    def make_scheduler(self, optimizer: torch.optim.Optimizer, phase: Phase):
        """A learning-rate scheduler stepped after every epoch of ``phase`` (None: constant)."""
        if self.settings.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(phase.epochs, 1))
        if self.settings.schedule == "cosine_quarter":
            # as CODA-Prompt's scheduler runs: its constructor leaves last_epoch at -1, so epochs 0 and 1 both
            # train at the full rate and the last epoch at cos(0.495π·(E−2)/(E−1)), never near 0
            last = max(phase.epochs - 1, 1)
            return torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda e: math.cos(0.495 * math.pi * max(e - 1, 0) / last))
        return None

    def start_phase(self) -> None:
        """Before the first epoch of ``self.phase`` (its optimizer and data are ready)."""

    def end_phase(self) -> None:
        """After the last epoch of ``self.phase``."""

    def before_epoch(self) -> None:
        """Before each epoch (``self.epoch`` counts from 0 within the phase)."""

    def after_epoch(self) -> None:
        """After each epoch (after the scheduler's step)."""

    def training_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward (under the run's autocast)."""
        with self.autocast():
            return self.model(x)

    def training_loss(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the loss scope's logits (unseen classes never enter the softmax)."""
        start, end = self.loss_range()
        return F.cross_entropy(logits[:, start:end].float(), y - start)

    def after_backward(self) -> None:
        """After the gradients exist, before the optimizer step (e.g. mask gradients)."""

    def after_step(self) -> None:
        """After each optimizer step (e.g. move an EMA copy)."""

    def after_experience(self) -> None:
        """After the experience's last phase (e.g. align heads, refresh a memory, fit a closed-form head)."""

    def predict(self, x: torch.Tensor) -> Prediction:
        with self.autocast():
            features = self.model.features(x)
            return Prediction(logits=self.model.head(features), features=features)

    def predict_given_task(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        raise ClpeftError(f"strategy {self.name} does not condition its model on the task id")

    def summary(self) -> dict:
        """Method-specific facts for the results file (e.g. mask overlaps); none by default."""
        return {}

    def report_metrics(self) -> dict[str, float]:
        """Scalars the report shows in a per-method table, by name (e.g. ``{"mask overlap (last)": 0.3}``)."""
        return {}

    # ------------------------------------------------------------------ resume
    def prepare_model_state(self, state: dict) -> None:
        """Before a checkpoint's tensors are loaded (kept attributes already restored): create buffers the saved
        model has and a fresh one lacks (e.g. cached masks)."""

    def after_resume(self, train_stream) -> None:
        """After a checkpoint is loaded: rebuild what derives from the kept attributes and the model (freeze
        finished parts, re-copy a teacher, re-read stored samples from ``train_stream``)."""

    # ================================================================== helpers for strategy files
    def autocast(self):
        """The run's mixed precision (bf16 autocast or nothing), for forwards a strategy writes itself."""
        return autocast(self._autocast_device, self.amp)

    @property
    def current_classes(self) -> range:
        classes = self.experience.classes_in_this_experience
        return range(min(classes), max(classes) + 1)

    @property
    def experience_dataset(self):
        """The current experience's training data as the stream holds it (an Avalanche dataset)."""
        return self.experience.dataset

    @property
    def experience_data(self):
        """The current experience's training data with test-time transforms (no augmentation)."""
        return self.experience.dataset.eval()

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataloader)

    def training_batches(self) -> Iterator:
        """One pass over the experience's training batches, as an epoch draws them (advances the shuffle)."""
        return iter(self.dataloader)

    def loss_range(self) -> tuple[int, int]:
        """Logit columns entering the loss: [0, seen) or the current experience's [start, end)."""
        if self.effective_loss_scope(self.settings) == "current":
            return self.current_classes.start, self.current_classes.stop
        return 0, self.model.head.num_seen

    @torch.no_grad()
    def frozen_features(self, x: torch.Tensor) -> torch.Tensor:
        """The head input of the model with every PET off, in eval mode, without gradient: the query of
        retrieval and prompt-pool methods."""
        from clpeft.pet.inject import pets_off

        with self.eval_mode(), pets_off(self.model), self.autocast():
            return self.model.features(x).float()

    @torch.no_grad()
    def extract_features(self, dataset, features=None, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of ``dataset`` in order, model in eval mode (restored after); ``features(x)``
        defaults to the model's head input."""
        from torch.utils.data import DataLoader

        features = features or self.model.features
        feats, labels = [], []
        with self.eval_mode():
            for batch in DataLoader(dataset, batch_size=batch_size or self.settings.eval_batch_size, shuffle=False,
                                    num_workers=0):
                x = batch[0].to(self.device)
                if self.batch_eval_transform is not None:
                    x = self.batch_eval_transform(x)
                with self.autocast():
                    feats.append(features(x).float())
                labels.append(torch.as_tensor(batch[1]).to(self.device))
        return torch.cat(feats), torch.cat(labels).long()

    def add_pet_instance(self, name: str) -> str:
        """A new named PET instance (one per experience, task or slot); the injected, never-trained ``default`` goes
        when the first named one arrives, so every instance's name says what it belongs to."""
        if self.pet.names == ["default"]:
            self.pet.remove("default")
        self.pet.add(name)
        return name

    def fold_over_budget(self, names: list[str], weights) -> list[str]:
        """Make room for one more instance under ``train.bank_budget``: the oldest of ``names`` (in bank order) are
        folded into the weights they adapt, each times its entry of ``weights``, so the summed bank's output is
        unchanged while its size and cost stop growing. Returns the names that stay separate (all without a budget)."""
        budget = self.settings.bank_budget
        if budget is None or len(names) < budget:
            return list(names)
        oldest = len(names) - budget + 1
        self.pet.fold(names[:oldest], weights[:oldest])
        return list(names[oldest:])

    def current_head_parameters(self) -> list[nn.Parameter]:
        """The newest head chunk's parameters (the current experience's classes; none before the first): what trains
        of the head when the loss covers only the current classes, or old rows must stay as they are."""
        return [p for chunk in self.model.head.chunks[-1:] for p in chunk.parameters()]

    def split_head(self, params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(``params`` outside the head, the head's), in order: for methods that train the head at a rate of its own."""
        head = {id(p) for p in self.model.head.parameters()}
        return [p for p in params if id(p) not in head], [p for p in params if id(p) in head]

    def body_parameters(self) -> list[nn.Parameter]:
        """What trains below the head: the PET's parameters with a PET, else every backbone weight."""
        return list(self.pet.parameters()) if self.pet is not None else list(self.model.backbone.parameters())

    @staticmethod
    def freeze(params: Iterable[nn.Parameter] | nn.Module) -> None:
        """``params`` (parameters or a module's) never train again: no gradient, so no optimizer picks them up."""
        for p in params.parameters() if isinstance(params, nn.Module) else params:
            p.requires_grad_(False)

    def generator(self, offset: int, device=None) -> torch.Generator:
        """A seeded generator of the method's own (:func:`clpeft.utils.seed.seeded_generator`)."""
        return seeded_generator(self.seed, offset, device)

    @contextmanager
    def eval_mode(self, module: nn.Module | None = None):
        """``module`` (default: the model) in eval mode inside the block, its mode restored after."""
        module = self.model if module is None else module
        was_training = module.training
        module.eval()
        try:
            yield module
        finally:
            module.train(was_training)
