"""The shared training loop and clpeft's method API: a strategy file says only what differs from it.

A method is a subclass of :class:`CLStrategy` registered with ``@register("name")``. It declares:

- ``trains``: ``"all"`` (every weight), ``"pet"`` (PET + head; every weight without a PET) or ``"head"``;
  ``trains_in``: ``"every"`` experience, only the ``"first"``, or ``"none"`` (closed-form methods);
- ``accepts_pet`` (True, False, or the PET kinds it works with) and ``requires_pet``;
- ``loss_scope``: ``"current"`` when the method's loss covers only the current experience's classes
  (None leaves the run's ``train.loss_scope``);
- ``Options``: a dataclass of its settings (types, defaults, one-line docs via
  :func:`clpeft.utils.typed.option`), checked when the run is configured, before anything is built;
- ``task_conditioned`` / ``resumable`` / ``ddp_safe``: what evaluation, resume and torchrun may expect.

and overrides only the hooks it needs, in the order they run::

    setup()                                   once, options in self.options
    before_experience()                       before the experience's data, head and optimizer are made
    training_data(dataset) -> dataset         what trains in this experience (e.g. + exemplars)
    phases() -> [Phase]                       named training phases (default: one of train.epochs epochs)
    trainable_parameters()                    what trains (per phase); the rest is frozen
    optimizer_groups(params) / make_scheduler(optimizer, phase)
    start_phase() ... end_phase()             around each phase's epochs
    before_epoch() / after_epoch()
    training_logits(x) -> logits              the training forward
    training_loss(logits, y, x) -> loss       default: cross-entropy over the loss scope's classes
    after_backward() / after_step()
    after_experience()
    predict(x) -> Prediction                  evaluation (predict_given_task for task-IL when conditioned)
    resume_state() / load_resume_state()      what a checkpoint must hold beyond the model's tensors
    summary() / report_metrics()              method-specific facts (results file) and scalars (report)

State a hook may read: ``model``, ``pet``, ``settings``, ``options``, ``device``, ``seed``, ``n_experiences``,
``experience_index``, ``current_classes``, ``experience_data`` (the experience's data with test-time
transforms), ``phase``, ``epoch``, ``steps_per_epoch``. Mixed precision (``self.autocast()``), the
optimizer, torchrun gradient sums and the checks that no training silently did nothing are the base's.
The loop runs on Avalanche's ``SupervisedTemplate``, so Avalanche *plugins* still plug in; a strategy
file never overrides its underscore methods nor reads its minibatch fields.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import nn
from tqdm.auto import tqdm

from clpeft import distributed
from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.utils.device import autocast
from clpeft.utils.typed import Settings, dataclass_from_dict, is_config, option

STRATEGIES: dict[str, type] = {}
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSS_SCOPES = ("seen", "current")
SCHEDULES = ("constant", "cosine", "cosine_quarter")


def register(name: str):
    """Class decorator adding a strategy to the registry under ``name``."""

    def wrap(cls):
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ClpeftError(f"strategy {name!r} is registered twice ({STRATEGIES[name].__module__} and {cls.__module__}); "
                              "rename one")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return wrap


def get_strategy(name: str) -> type:
    import clpeft.strategies  # noqa: F401 - registers the built-in strategies
    from clpeft.plugins import lookup

    return lookup(STRATEGIES, name, "clpeft.strategies", "strategy")


@dataclass
class TrainSettings(Settings):
    """Optimisation settings shared by every strategy (per-strategy settings go to ``options``)."""

    section = "train"

    epochs: int = option(1, "epochs per experience", ge=0)
    lr: float = option(1e-3, "learning rate", gt=0.0)
    batch_size: int = option(32, "training mini-batch size", ge=1)
    eval_batch_size: int = option(256, "test batch size", ge=1)
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "weight decay", ge=0.0)
    momentum: float = option(0.9, "SGD momentum", ge=0.0)
    loss_scope: str = option("seen", "classes in the cross-entropy: all seen so far, or the current experience's",
                             choices=LOSS_SCOPES)
    drop_last: bool = option(False, "drop the last incomplete training batch")
    schedule: str = option("constant", "learning-rate schedule per epoch (cosine: to 0 over the phase; "
                                       "cosine_quarter: CODA-Prompt's, lr·cos(0.495π·max(e−1, 0)/(E−1)) in epoch e)", choices=SCHEDULES)
    grad_clip_norm: float | None = option(None, "clip the gradient norm to this value (null: no clipping)", gt=0.0)
    num_workers: int = option(0, "data-loading worker processes for image files and test batches (0: in-process)", ge=0)
    pin_memory: bool = option(False, "page-locked host batches (faster copies to a GPU)")
    fused_optimizer: bool = option(False, "the optimizer's fused kernel (one launch per step; CUDA)")
    compile: str = option("off", "torch.compile the backbone (eager: graph capture only, for checking)",
                          choices=("off", "default", "reduce-overhead", "max-autotune", "eager"))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        return dataclass_from_dict(cls, values, "training setting", "train")


@dataclass
class Phase:
    """A named stretch of training inside an experience, with its own epochs, learning rate and optimizer."""

    name: str
    epochs: int
    lr: float | None = None  # None: train.lr


@dataclass
class NoOptions:
    """Options of a strategy that has none: any option given is an error."""


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


def fingerprint(params: list[nn.Parameter]) -> torch.Tensor:
    """Per tensor (Σx, Σx², Σ x·position) in float64: moves when any element of any tensor moves."""
    if not params:
        return torch.zeros(0, dtype=torch.float64)
    out = []
    for p in params:
        v = p.detach().reshape(-1).double()
        pos = torch.arange(1, v.numel() + 1, device=v.device, dtype=torch.float64)
        out.append(torch.stack([v.sum(), (v * v).sum(), (v * pos).sum()]))
    return torch.stack(out).cpu()


class EpochProgress:
    """Progress of one epoch: on a terminal a bar with the running loss (read at most twice a second, so the
    device is not synchronised every step); elsewhere (logs, CI) one line per epoch instead of redrawn bars."""

    def __init__(self, strategy: "CLStrategy"):
        import sys
        import time

        self.strategy, self.time = strategy, time
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        phase = strategy.phase
        self.label = (f"{strategy.name} exp {strategy.experience_index} "
                      + (f"{phase.name} " if len(strategy._phases) > 1 else "")
                      + f"epoch {strategy.epoch + 1}/{phase.epochs}")
        self.bar = tqdm(total=strategy.steps_per_epoch, desc=self.label, leave=False, dynamic_ncols=True) if self.tty else None

    def step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = self.time.perf_counter()
        if now - self.last > 0.5:
            s = self.strategy
            self.bar.set_postfix(loss=f"{float(s._loss_sum) / max(s._steps, 1):.4f}", refresh=False)
            self.last = now

    def close(self, entry: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        print(f"  {self.label}: loss {entry['loss']:.4f}, train accuracy {100 * entry['train_accuracy']:.1f} % "
              f"({self.time.perf_counter() - self.start:.1f} s)", flush=True)


class CLStrategy(SupervisedTemplate):
    """Base of every clpeft strategy (see the module docstring for the method API)."""

    name = "base"
    trains = "pet"
    trains_in = "every"
    accepts_pet: bool | tuple = True
    requires_pet = False
    loss_scope: str | None = None
    task_conditioned = False
    #: Strategies whose whole state is captured by ``resume_state`` (Avalanche plugins' is not).
    resumable = True
    #: Trains correctly under torchrun (``clpeft.distributed``): every piece of state outside the
    #: gradients is computed identically on every rank. Avalanche-plugin strategies are not.
    ddp_safe = True
    Options = NoOptions
    #: False: train from Avalanche's data loader even on in-memory streams (plugins that swap the loader)
    tensor_batches = True

    def __init__(self, *, model: nn.Module, settings: TrainSettings, device: torch.device, amp: str = "off",
                 pet=None, plugins=None, evaluator=None, seed: int = 0, in_memory: bool = False,
                 progress: bool = False, options=None, n_experiences: int | None = None):
        self.check_pet(pet.config.kind if pet is not None else None)
        self.settings = settings
        self.amp = amp
        self.pet = pet
        self.seed = seed
        self.n_experiences = n_experiences  # the stream's length, when known (some methods size banks by it)
        self.in_memory = in_memory
        self.progress = progress
        self.options = options if is_config(options) else self.parse_options(options or {})
        self.experience_index = -1
        self.phase: Phase | None = None
        self.epoch = 0
        self.scheduler = None
        self.training_log: list[dict] = []  # one entry per (experience, phase, epoch): mean loss and steps
        self.batch_augment = None  # set by the run when the stream augments batches on the device
        self.batch_eval_transform = None
        self._augment_generator = None
        self.epoch_listeners: list = []  # called with each new training_log entry (live loggers)
        self._phases: list[Phase] = []
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=settings.lr)
        super().__init__(
            model=model, optimizer=placeholder, criterion=nn.CrossEntropyLoss(),
            train_mb_size=settings.batch_size, train_epochs=settings.epochs,
            eval_mb_size=settings.eval_batch_size, device=device, plugins=plugins,
            evaluator=evaluator, eval_every=-1,
        )
        self._autocast_device = torch.device(device)
        self.setup()
        for plugin in reversed(self.avalanche_plugins()):
            self.plugins.insert(0, plugin)

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
    def check_run(cls, options, settings: TrainSettings, experience_sizes: list[int] | None) -> None:
        """Everything known before any data or model is built: the method's own rules, then the base's.

        A cross-entropy over one logit is identically zero, so an experience trained by gradient whose
        loss covers a single class can learn nothing; 0 epochs leave the new head as it was drawn."""
        cls.check_config(options, settings)
        trained = cls.training_experiences(len(experience_sizes) if experience_sizes else 1)
        if trained and settings.epochs == 0:
            raise ClpeftError(f"{cls.name} learns by gradient steps but train.epochs is 0, so nothing would train; "
                              "set train.epochs ≥ 1")
        if not experience_sizes:
            return
        scope = cls.effective_loss_scope(settings)
        seen = np.cumsum(experience_sizes).tolist()
        for i in trained:
            width = experience_sizes[i] if scope == "current" else seen[i]
            if width < 2:
                fix = ("use at least 2 classes per experience" if scope == "current" else
                       "give the first experience at least 2 classes (stream.first_experience_classes: 2)")
                raise ClpeftError(f"{cls.name} trains experience {i} on a cross-entropy over its {scope} classes, "
                                  f"which is 1 class: the loss is identically 0 and nothing can learn; {fix}")

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
        head = list(self.model.head.parameters())
        if self.trains == "head":
            return head
        if self.trains == "pet" and self.pet is not None:
            return list(self.pet.parameters()) + head
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

    # ------------------------------------------------------------------ resume (clpeft.checkpoint)
    def resume_state(self) -> dict:
        """What to save after an experience besides the model's tensors: the model's *structure* (head
        chunks, PET instances) and the loop's position. Strategy files add their own fields."""
        return {"head_chunks": [chunk.out_features for chunk in self.model.head.chunks],
                "pet_instances": list(self.pet.names) if self.pet is not None else [],
                "pet_active": self.pet.active if self.pet is not None else None,
                "clock": {k: v for k, v in vars(self.clock).items() if isinstance(v, int)},
                "training_log": list(self.training_log)}

    def prepare_model_state(self, state: dict) -> None:
        """Hook: create buffers the saved model state has and a fresh model lacks (e.g. cached masks)."""

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        """Rebuild the saved structure, then load the model's tensors into it (``train_stream``: for
        strategies that keep data of earlier experiences). Strategy files extend it for their fields."""
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
        self.prepare_model_state(state)
        try:
            self.model.load_state_dict(model_state)
        except RuntimeError as exc:  # wrong shapes or keys: the checkpoint does not fit this run's model
            first = str(exc).strip().splitlines()
            detail = next((line.strip() for line in first[1:] if line.strip()), first[0] if first else "")
            raise ClpeftError(f"the checkpoint's model state does not fit this run ({detail[:160]}); "
                              "delete checkpoint.pt in the run directory to start over") from None
        for key, value in state["clock"].items():
            setattr(self.clock, key, value)
        self.training_log = list(state.get("training_log", []))
        self.experience_index = self.clock.train_exp_counter - 1

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

        was_training = self.model.training
        self.model.eval()
        with pets_off(self.model), self.autocast():
            q = self.model.features(x).float()
        self.model.train(was_training)
        return q

    @torch.no_grad()
    def extract_features(self, dataset, features=None, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of ``dataset`` in order, model in eval mode (restored after); ``features(x)``
        defaults to the model's head input."""
        from torch.utils.data import DataLoader

        was_training = self.model.training
        self.model.eval()
        features = features or self.model.features
        feats, labels = [], []
        for batch in DataLoader(dataset, batch_size=batch_size or self.settings.eval_batch_size, shuffle=False,
                                num_workers=0):
            x = batch[0].to(self.device)
            if self.batch_eval_transform is not None:
                x = self.batch_eval_transform(x)
            with self.autocast():
                feats.append(features(x).float())
            labels.append(torch.as_tensor(batch[1]).to(self.device))
        self.model.train(was_training)
        return torch.cat(feats), torch.cat(labels).long()

    # ================================================================== the loop on Avalanche's template
    def _apply_trainable(self) -> None:
        trainable = {id(p) for p in self.trainable_parameters()}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)

    def _before_training_exp(self, **kwargs):
        self.experience_index = self.clock.train_exp_counter
        self.before_experience()
        self._phases = list(self.phases())
        self.phase = self._phases[0] if self._phases else None
        super()._before_training_exp(**kwargs)

    def train_dataset_adaptation(self, **kwargs):
        self.adapted_dataset = self.training_data(self.experience.dataset).train()

    def model_adaptation(self, model=None):
        model = super().model_adaptation(model)
        if self.is_training:
            self._apply_trainable()
        return model

    def make_optimizer(self, **kwargs):
        params = [p for p in self.trainable_parameters() if p.requires_grad]
        s = self.settings
        if not params or self.phase is None:
            params = [nn.Parameter(torch.zeros(1, device=self.device))]  # nothing to train (closed-form methods)
        lr = self.phase.lr if self.phase is not None and self.phase.lr is not None else s.lr
        groups = self.optimizer_groups(params) if self.phase is not None else [{"params": params}]
        fused = {"fused": True} if s.fused_optimizer else {}
        if s.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay, **fused)
        elif s.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=s.weight_decay, **fused)
        else:
            self.optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=s.weight_decay, **fused)
        self.optimized_param_id = {id(p) for p in params}  # tells Avalanche not to rebuild it again
        self.scheduler = self.make_scheduler(self.optimizer, self.phase) if self.phase is not None else None

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        for k, phase in enumerate(self._phases):
            if k > 0:
                self.phase = phase
                self._apply_trainable()
                self.make_optimizer()
            self.train_epochs = phase.epochs
            watched = [p for p in self.trainable_parameters() if p.requires_grad]
            before = fingerprint(watched)
            self._phase_loss_nonzero = False
            self.start_phase()
            for self.epoch in range(phase.epochs):
                self._before_training_epoch(**kwargs)
                if self._stop_training:  # Avalanche's early stopping
                    self._stop_training = False
                    break
                self.training_epoch(**kwargs)
                if self.scheduler is not None:
                    self.scheduler.step()
                self._after_training_epoch(**kwargs)
            self.end_phase()
            if phase.epochs > 0:
                self._check_learning(phase, watched, before)

    def _check_learning(self, phase: Phase, watched: list, before: torch.Tensor) -> None:
        """No silent no-op: a phase whose loss was exactly 0 throughout, or that moved no parameter, fails."""
        where = f"experience {self.experience_index}" + (f" ({phase.name} phase)" if len(self._phases) > 1 else "")
        if not self._phase_loss_nonzero:
            raise ClpeftError(f"{self.name}: the training loss was exactly 0 at every step of {where}, so nothing "
                              "learned (one class in the loss, or a loss that ignores the data); check the stream's "
                              "classes per experience and train.loss_scope")
        if not watched or torch.equal(before, fingerprint(watched)):
            raise ClpeftError(f"{self.name}: no trainable parameter moved during {where}; check the learning rate "
                              "(train.lr) and what the strategy trains")

    def _before_training_epoch(self, **kwargs):
        self.before_epoch()
        super()._before_training_epoch(**kwargs)

    def _after_training_epoch(self, **kwargs):
        self.after_epoch()
        super()._after_training_epoch(**kwargs)

    def _after_backward(self, **kwargs):
        self.after_backward()
        super()._after_backward(**kwargs)

    def _after_update(self, **kwargs):
        self.after_step()
        super()._after_update(**kwargs)

    def _after_training_exp(self, **kwargs):
        self.after_experience()
        self.phase = None
        super()._after_training_exp(**kwargs)

    def forward(self):
        if self.is_training:
            if self.batch_augment is not None:  # the stream's augmentation, batched on the device
                self.mbatch[0] = self.batch_augment(self.mb_x, self._augment_generator)
            return self.training_logits(self.mb_x)
        with self.autocast():
            return self.model(self.mb_x)

    def criterion(self):
        if not self.is_training:
            return F.cross_entropy(self.mb_output.float(), self.mb_y)
        return self.training_loss(self.mb_output, self.mb_y, self.mb_x)

    def training_epoch(self, **kwargs):
        device = self.device
        zero = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self._loss_finite = torch.ones((), dtype=torch.bool, device=device)
        self._loss_sum, self._loss_absmax, self._first_loss = zero(), zero(), zero()
        self._correct, self._seen_samples = zero(), zero()
        self._steps = 0
        self._bar = EpochProgress(self) if self.progress else None
        super().training_epoch(**kwargs)
        total, first, absmax, finite = self._loss_sum, self._first_loss, self._loss_absmax, self._loss_finite.double()
        correct, samples = self._correct, self._seen_samples
        if distributed.world_size() > 1:  # the global batch's loss: each rank summed its share-weighted loss
            dist = torch.distributed
            sums = torch.stack([total, first, correct, samples])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
            total, first, correct, samples = sums.unbind()
            dist.all_reduce(absmax, op=dist.ReduceOp.MAX)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        stats = torch.stack([total, first, absmax, finite, correct, samples]).cpu()  # one host sync per epoch
        if not bool(stats[3]):
            raise ClpeftError(f"the training loss became NaN or infinite in experience {self.experience_index} "
                              f"(epoch {self.epoch}); lower the learning rate, or use --amp off")
        steps = self._steps
        if float(stats[2]) > 0:
            self._phase_loss_nonzero = True
        entry = {"experience": self.experience_index, "phase": self.phase.name, "epoch": self.epoch,
                 "steps": steps, "loss": float(stats[0]) / steps if steps else math.nan,
                 "train_accuracy": float(stats[4] / stats[5]) if float(stats[5]) else math.nan}
        if self.epoch == 0 and steps:  # where the phase started, for the divergence check
            entry["first_step_loss"] = float(stats[1])
        self.training_log.append(entry)
        if self._bar is not None:
            self._bar.close(entry)
        for listener in self.epoch_listeners:
            listener(entry)

    def backward(self):
        loss = self.loss.detach().double().sum()
        share = self._batches.share if distributed.world_size() > 1 else 1.0
        self._loss_finite &= torch.isfinite(loss).all()
        self._loss_sum += loss * share
        self._loss_absmax = torch.maximum(self._loss_absmax, loss.abs())
        if self._steps == 0:
            self._first_loss = self._first_loss + loss * share
        seen = self.model.head.num_seen
        if self.mb_output.dim() == 2 and seen:  # training accuracy over the classes seen so far
            self._correct += (self.mb_output.detach()[:, :seen].argmax(1) == self.mb_y).sum()
            self._seen_samples += self.mb_y.numel()
        self._steps += 1
        if self._bar is not None:
            self._bar.step()
        if distributed.world_size() > 1:  # this rank's share of the global batch's mean loss
            (self.loss * self._batches.share).backward(retain_graph=self.retain_graph)
        else:
            super().backward()

    def optimizer_step(self):
        if distributed.world_size() > 1:
            distributed.sum_gradients([p for group in self.optimizer.param_groups for p in group["params"]])
        if self.settings.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           self.settings.grad_clip_norm)
        super().optimizer_step()

    def make_train_dataloader(self, num_workers=0, shuffle=True, pin_memory=None, persistent_workers=False,
                              drop_last=False, **kwargs):
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.clock.train_exp_counter)
        if self.batch_augment is not None:  # its own seeded stream of crops and flips, on the device
            self._augment_generator = torch.Generator(device=self.device).manual_seed(
                self.seed * 1000 + self.clock.train_exp_counter + 7)
        num_workers, pin_memory = self.settings.num_workers, self.settings.pin_memory
        if not self.in_memory and distributed.world_size() > 1:
            batches = GlobalBatches(len(self.adapted_dataset), self.settings.batch_size, generator,
                                    self.settings.drop_last)
            self.dataloader = torch.utils.data.DataLoader(self.adapted_dataset, batch_sampler=batches,
                                                          num_workers=num_workers, pin_memory=bool(pin_memory))
            self._batches = batches
            return
        if not self.in_memory or not self.tensor_batches:
            return super().make_train_dataloader(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                                                 persistent_workers=persistent_workers and num_workers > 0,
                                                 drop_last=self.settings.drop_last, **kwargs)
        from clpeft.streams.stream import materialize

        x, y = materialize(self.adapted_dataset)
        if self.batch_augment is not None:  # uint8 images: keep the experience on the device, copy nothing per step
            x, y = x.to(self.device), y.to(self.device)
        t = torch.full_like(y, int(self.experience.task_label))
        self.dataloader = TensorBatches((x, y, t), self.settings.batch_size, generator, self.settings.drop_last)
        self._batches = self.dataloader.batches
