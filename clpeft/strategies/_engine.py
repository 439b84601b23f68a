"""The training loop on Avalanche's ``SupervisedTemplate``: what runs a method's hooks, never a method itself.

:class:`Engine` owns the loop (phases, epochs, optimizer and scheduler per phase, mixed precision, torchrun
gradient sums, seeded batches, the checks that no training silently did nothing, the loss log) and the
checkpoint state (the model's structure, the loop's position and the attributes a method declares in ``keeps``).
A method subclasses :class:`clpeft.strategies.base.CLStrategy`, whose hooks this loop calls; it never overrides
anything here. Avalanche plugins still plug in, since the loop is Avalanche's template.
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from clpeft import distributed
from clpeft.errors import ClpeftError
from clpeft.strategies.batching import GlobalBatches, TensorBatches
from clpeft.strategies.progress import EpochProgress
from clpeft.utils.seed import seeded_generator
from clpeft.utils.typed import is_config

if TYPE_CHECKING:  # annotations only
    from clpeft.config import TrainSettings
    from clpeft.strategies.base import Phase


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


def _checkpointable(value, where: str) -> None:
    """Refuse, when saving, a kept value a ``weights_only`` checkpoint could not load back."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _checkpointable(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (int, str)):
                raise ClpeftError(f"{where} has a key of type {type(k).__name__}; a kept dict needs int or str keys")
            _checkpointable(v, f"{where}[{k!r}]")
        return
    raise ClpeftError(f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot hold; keep "
                      "tensors, numbers, strings, lists/dicts of them, or an object with state_dict()")


def pack_kept(value, where: str):
    """One declared attribute as checkpoint data: an object's ``state_dict()``, a generator's state, or the value."""
    if isinstance(value, torch.Generator):
        return {"generator_state": value.get_state()}
    if callable(getattr(value, "state_dict", None)) and not isinstance(value, nn.Module):
        state = value.state_dict()
        _checkpointable(state, where)
        return {"state_dict": state}
    _checkpointable(value, where)
    return {"value": value}


class Engine(SupervisedTemplate):
    """The loop and the checkpoint state; :class:`~clpeft.strategies.base.CLStrategy` adds the method API."""

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

    # ================================================================== checkpoint state (clpeft.checkpoint)
    def resume_state(self) -> dict:
        """What a checkpoint holds besides the model's tensors: the model's *structure* (head chunks, PET
        instances), the loop's position, the loss log and every attribute the method declares in ``keeps``."""
        return {"head_chunks": [chunk.out_features for chunk in self.model.head.chunks],
                "pet_instances": list(self.pet.names) if self.pet is not None else [],
                "pet_active": self.pet.active if self.pet is not None else None,
                "clock": {k: v for k, v in vars(self.clock).items() if isinstance(v, int)},
                "training_log": list(self.training_log),
                "kept": {name: pack_kept(getattr(self, name), f"{self.name}: kept attribute {name!r}")
                         for name in self.keeps}}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        """Rebuild the saved structure, restore the kept attributes, load the model's tensors, then let the
        method rebuild what derives from them (``after_resume``)."""
        if not self.resumable:
            raise ClpeftError(f"strategy {self.name} cannot resume (its state lives in Avalanche plugins); rerun it from the start")
        missing = [key for key in ("head_chunks", "pet_instances", "pet_active", "clock") if key not in state]
        if missing:
            raise ClpeftError(f"the checkpoint's strategy state has no {missing[0]!r} (damaged, or written by another "
                              "version of clpeft); delete checkpoint.pt in the run directory to start over")
        for size in state["head_chunks"][len(self.model.head.chunks):]:
            self.model.head.grow(size)
        if self.pet is not None:
            for name in state["pet_instances"]:
                if name not in self.pet.names:
                    self.pet.add(name)
            for name in [n for n in self.pet.names if n not in state["pet_instances"]]:
                self.pet.remove(name)
            self.pet.activate(state["pet_active"])
        kept = state.get("kept", {})
        missing = [name for name in self.keeps if name not in kept]
        if missing:
            raise ClpeftError(f"the checkpoint has no {missing[0]!r} for strategy {self.name} (written by another "
                              "version of it); delete checkpoint.pt in the run directory to start over")
        for name in self.keeps:
            packed = kept[name]
            if "generator_state" in packed:
                getattr(self, name).set_state(packed["generator_state"])
            elif "state_dict" in packed:
                getattr(self, name).load_state_dict(packed["state_dict"])
            else:
                setattr(self, name, copy.deepcopy(packed["value"]))
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
        self.after_resume(train_stream)

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
        start, end = self.loss_range()
        empty = end - start < 2  # a loss over one class is identically 0: the run said it skips this experience
        for k, phase in enumerate(self._phases):
            if k > 0:
                self.phase = phase
                self._apply_trainable()
                self.make_optimizer()
            self.train_epochs = 0 if empty else phase.epochs
            watched = [p for p in self.trainable_parameters() if p.requires_grad]
            before = fingerprint(watched)
            self._phase_loss_nonzero = False
            self.start_phase()
            for self.epoch in range(self.train_epochs):
                self._before_training_epoch(**kwargs)
                if self._stop_training:  # Avalanche's early stopping
                    self._stop_training = False
                    break
                self.training_epoch(**kwargs)
                if self.scheduler is not None:
                    self.scheduler.step()
                self._after_training_epoch(**kwargs)
            self.end_phase()
            if self.train_epochs > 0:
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
        if self.epoch == 0 and steps:  # where the phase started and a uniform guess's width, for the divergence check
            start, end = self.loss_range()
            entry["first_step_loss"], entry["classes"] = float(stats[1]), end - start
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
        generator = seeded_generator(self.seed, self.clock.train_exp_counter)
        if self.batch_augment is not None:  # its own seeded stream of crops and flips, on the device
            self._augment_generator = seeded_generator(self.seed, self.clock.train_exp_counter + 7, self.device)
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
