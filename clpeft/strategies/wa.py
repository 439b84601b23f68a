"""Weight Aligning (Zhao et al., CVPR 2020) as PyCIL runs it, on any backbone or PET learner.

- train on the current experience plus a class-balanced exemplar memory (herding);
- from experience 1 on: loss = (1 − λ)·CE(all seen logits) + λ·KD(old logits, T = 2), λ = old/seen
  classes, KD summed over old classes, batch-averaged, no T² (PyCIL);
- after training: scale the new classes' head rows to the old rows' mean norm (``align``), then
  refresh the memory and freeze a copy of the model as the next teacher.

With ``--pet`` only the PET and the head train (the teacher is the model with its PET as it was);
without, the whole network trains (ResNet-32 from scratch, as PyCIL). ``align: false`` is the
ablation that shows what the aligning step buys. PyCIL's CIFAR-100 settings are in the
``wa_cifar100_*`` scenarios.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.models.heads import align_new_class_norms
from clpeft.strategies.base import CLStrategy, Phase, register
from clpeft.strategies.memory import ExemplarMemory
from clpeft.utils.typed import check_milestones, option


def kd_loss(student_old_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """PyCIL's ``_KD_loss``: −Σ_c softmax(t/T)_c · log_softmax(s/T)_c, averaged over the batch, no T²."""
    target = F.softmax(teacher_logits.float() / temperature, dim=1)
    return -(target * F.log_softmax(student_old_logits.float() / temperature, dim=1)).sum(1).mean()


@register("wa")
class WeightAligning(CLStrategy):
    keeps = ("gammas", "memory_fit", "memory")

    @dataclass
    class Options:
        memory_size: int | None = option(2000, "exemplars in total (re-cut per class as classes arrive)", ge=1)
        memory_per_class: int | None = option(None, "exemplars per class (instead of memory_size)", ge=1)
        temperature: float = option(2.0, "distillation temperature", gt=0.0)
        align: bool = option(True, "align the new head rows' norms after each experience (false: the ablation)")
        first_epochs: int | None = option(None, "epochs of experience 0 when they differ (PyCIL: 200)", ge=1)
        first_weight_decay: float | None = option(None, "weight decay of experience 0 when it differs", ge=0.0)
        milestones: list[int] | None = option(None, "MultiStepLR epochs (PyCIL later experiences: 60, 100, 140)")
        first_milestones: list[int] | None = option(None, "MultiStepLR epochs of experience 0 (PyCIL: 60, 120, 170)")
        lr_decay: float = option(0.1, "MultiStepLR factor", gt=0.0)

    @classmethod
    def check_config(cls, options, settings) -> None:
        check_milestones(options.milestones, "options.milestones of wa")
        check_milestones(options.first_milestones, "options.first_milestones of wa")

    def setup(self):
        o = self.options
        memory_size = None if o.memory_per_class is not None else o.memory_size
        self.memory = ExemplarMemory(memory_size, o.memory_per_class, batch_size=self.settings.eval_batch_size)
        self.teacher = None
        self.n_old = 0
        self.gammas: list[float] = []
        self.memory_fit: list[float] = []  # accuracy on the old classes' exemplars after each experience's training

    @property
    def is_first(self) -> bool:
        return self.teacher is None

    # ------------------------------------------------------------------ data and schedule
    def training_data(self, dataset):
        return dataset.concat(self.memory.buffer) if len(self.memory) else dataset

    def before_experience(self):
        self.n_old = self.model.head.num_seen

    def phases(self) -> list[Phase]:
        first = self.options.first_epochs if self.is_first and self.options.first_epochs else None
        return [Phase("train", first or self.settings.epochs)]

    def optimizer_groups(self, params):
        if self.is_first and self.options.first_weight_decay is not None:
            return [{"params": params, "weight_decay": self.options.first_weight_decay}]
        return [{"params": params}]

    def make_scheduler(self, optimizer, phase):
        o = self.options
        milestones = (o.first_milestones if self.is_first and o.first_milestones else o.milestones) or []
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=o.lr_decay)

    # ------------------------------------------------------------------ loss
    def training_loss(self, logits, y, x):
        seen = self.model.head.num_seen
        logits = logits[:, :seen].float()
        ce = F.cross_entropy(logits, y)
        if self.teacher is None or self.n_old == 0:
            return ce
        with torch.no_grad():
            teacher = self.teacher(x)[:, :self.n_old]
        lam = self.n_old / seen
        return (1 - lam) * ce + lam * kd_loss(logits[:, :self.n_old], teacher, self.options.temperature)

    # ------------------------------------------------------------------ after an experience
    def after_experience(self):
        if self.options.align and self.n_old > 0:
            self.gammas.append(align_new_class_norms(self.model.head, self.n_old))
        if self.n_old > 0:
            self.memory_fit.append(self.exemplar_accuracy())
        self.memory.add_experience(self)
        self.freeze_teacher()

    def freeze_teacher(self) -> None:
        """The model as it is now, frozen: the next experience's distillation target."""
        self.teacher = copy.deepcopy(self.model).eval()
        self.freeze(self.teacher)

    def exemplar_accuracy(self) -> float:
        """Accuracy over all seen classes on the old classes' exemplars, which the experience trained on. WA's
        aligning assumes a model that fits its training data, so that the only bias left is in the new rows'
        norms; a model that misclassifies its own exemplars is biased elsewhere (reports/wa: the weights' component
        along the features' mean), and aligning cannot help it."""
        logits, labels = self.extract_features(self.memory.buffer.eval(), features=self.model)
        return float((logits[:, :self.model.head.num_seen].argmax(1) == labels).float().mean())

    def summary(self) -> dict:
        """γ of each aligning step (old mean norm / new mean norm), the accuracy on the old exemplars after each
        experience from the second on, and the exemplars kept per class."""
        return {"gammas": list(self.gammas), "exemplar_accuracy": list(self.memory_fit),
                "exemplars_per_class": {int(c): len(d) for c, d in self.memory.classes.items()}}

    def report_metrics(self) -> dict[str, float]:
        """How well the run fits its old exemplars, and at how many aligning steps WA's premise failed: γ > 1 means
        the new rows came out of training *smaller* than the old ones, so aligning scaled them up (reports/wa)."""
        metrics = {"old exemplars fit (last)": self.memory_fit[-1]} if self.memory_fit else {}  # fractions: shown in %
        if self.gammas:
            metrics["aligning steps with γ > 1"] = sum(g > 1 for g in self.gammas) / len(self.gammas)
        return metrics

    def after_resume(self, train_stream) -> None:
        self.memory.rebuild(train_stream)
        if self.model.head.chunks:  # the teacher is the model as it was at the end of the last experience
            self.freeze_teacher()
