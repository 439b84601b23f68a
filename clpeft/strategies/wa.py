"""Weight Aligning (Zhao et al., CVPR 2020) as PyCIL runs it, on any backbone or PET learner.

- train on the current experience plus a class-balanced exemplar memory (herding);
- from experience 1 on: loss = (1 − λ)·CE(all seen logits) + λ·KD(old logits, T = 2), λ = old/seen
  classes, KD summed over old classes, batch-averaged, no T² (PyCIL);
- after training: scale the new classes' head rows to the old rows' mean norm (``align``), then
  refresh the memory and freeze a copy of the model as the next teacher.

With ``--pet`` only the PET and the head train (the teacher is the model with its PET as it was);
without, the whole network trains (ResNet-32 from scratch, as PyCIL). ``align: false`` is the
ablation that shows what the aligning step buys. Settings: ``shared/specs/wa.md``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.models.heads import align_new_class_norms
from clpeft.strategies.base import CLStrategy, register
from clpeft.strategies.memory import ExemplarMemory


def kd_loss(student_old_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """PyCIL's ``_KD_loss``: −Σ_c softmax(t/T)_c · log_softmax(s/T)_c, averaged over the batch, no T²."""
    target = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(target * F.log_softmax(student_old_logits.float() / temperature, dim=1)).sum(1).mean()


@register("wa")
class WeightAligning(CLStrategy):
    trains = "pet"

    def configure(self, memory_size: int | None = 2000, memory_per_class: int | None = None, temperature: float = 2.0,
                  align: bool = True, first_epochs: int | None = None, first_weight_decay: float | None = None,
                  milestones: list | None = None, first_milestones: list | None = None, lr_decay: float = 0.1,
                  **options):
        """``first_*``: settings of experience 0 when they differ (PyCIL: 200 epochs, wd 5e-4, milestones
        [60, 120, 170]; later: 170 epochs, wd 2e-4, [60, 100, 140]); ``milestones``: MultiStepLR epochs."""
        super().configure(**options)
        if temperature <= 0:
            raise ClpeftError(f"temperature must be > 0, got {temperature}")
        self.memory = ExemplarMemory(memory_size, memory_per_class, batch_size=self.settings.eval_batch_size)
        self.temperature, self.align = temperature, align
        self.first_epochs, self.first_weight_decay = first_epochs, first_weight_decay
        self.milestones, self.first_milestones, self.lr_decay = milestones, first_milestones, lr_decay
        self.teacher = None
        self.n_old = 0
        self.gammas: list[float] = []

    @property
    def is_first(self) -> bool:
        return self.teacher is None

    # ------------------------------------------------------------------ data and schedule
    def train_dataset_adaptation(self, **kwargs):
        super().train_dataset_adaptation(**kwargs)
        if len(self.memory):
            self.adapted_dataset = self.adapted_dataset.concat(self.memory.buffer.train())

    def _before_training_exp(self, **kwargs):
        self.n_old = self.model.head.num_seen
        self.train_epochs = self.first_epochs if (self.is_first and self.first_epochs) else self.settings.epochs
        super()._before_training_exp(**kwargs)

    def make_optimizer(self, **kwargs):
        super().make_optimizer(**kwargs)
        if self.is_first and self.first_weight_decay is not None:
            for group in self.optimizer.param_groups:
                group["weight_decay"] = self.first_weight_decay
        milestones = (self.first_milestones if self.is_first and self.first_milestones else self.milestones) or []
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=self.lr_decay)

    def _after_training_epoch(self, **kwargs):
        self.scheduler.step()
        super()._after_training_epoch(**kwargs)

    # ------------------------------------------------------------------ loss
    def criterion(self):
        if not self.is_training:
            return super().criterion()
        seen = self.model.head.num_seen
        logits = self.mb_output[:, :seen].float()
        ce = F.cross_entropy(logits, self.mb_y)
        if self.teacher is None or self.n_old == 0:
            return ce
        with torch.no_grad():
            teacher = self.teacher(self.mb_x)[:, :self.n_old]
        lam = self.n_old / seen
        return (1 - lam) * ce + lam * kd_loss(logits[:, :self.n_old], teacher, self.temperature)

    # ------------------------------------------------------------------ after an experience
    def _after_training_exp(self, **kwargs):
        if self.align and self.n_old > 0:
            self.gammas.append(align_new_class_norms(self.model.head, self.n_old))
        self.memory.update(self)
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        super()._after_training_exp(**kwargs)

    def summary(self) -> dict:
        """γ of each aligning step (old mean norm / new mean norm) and the exemplars kept per class."""
        return {"gammas": list(self.gammas), "exemplars_per_class": {int(c): len(d) for c, d in self.memory.classes.items()}}

    def resume_state(self) -> dict:
        return {**super().resume_state(), "gammas": list(self.gammas), "memory": dict(self.memory.picks)}

    def load_resume_state(self, state: dict, model_state: dict, train_stream) -> None:
        super().load_resume_state(state, model_state, train_stream)
        self.gammas = list(state["gammas"])
        self.memory.restore(state["memory"], train_stream)
        if state["head_chunks"]:  # the teacher is the model as it was at the end of the last experience
            self.teacher = copy.deepcopy(self.model).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
