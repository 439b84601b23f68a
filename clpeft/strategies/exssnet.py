"""ExSSNeT (Yadav & Bansal, 2023), with SSNeT and SupSup as variants: one supermask per experience.

Over the shared weights W of every Linear/Conv2d of the backbone (the supermask PET), experience t
trains in two phases:

1. **mask phase** (``epochs``): the scores of mask M_t (top-k per layer keeps ``sparsity_kept``)
   and the experience's head chunk train; W is frozen;
2. **weight phase** (``weight_epochs``): W trains where the *editable* mask allows. ExSSNeT:
   E_t = M_t ∧ ¬(M_0 ∨ … ∨ M_{t−1}), so no weight an earlier mask uses ever changes (zero
   forgetting under the true task id); SSNeT: E_t = M_t (earlier tasks may forget); SupSup: no
   weight phase. Gradients are masked to E_t and every step restores the weights outside E_t.

BatchNorm keeps statistics per task (the PET's ``task_norm``), and each head chunk trains only in its
own experience. ``kkt``: before task t's mask phase, its scores start from the earlier mask whose
features classify task t's training data best by kNN (``best``: only above chance; ``always``;
``all``: mean of every mask above chance).

Evaluation: task-IL runs each sample under its true task's mask (``predict_given_task``);
class-IL infers the task per sample (``task_inference: entropy`` → the mask whose task-local
softmax has the lowest entropy; ``oneshot`` → SupSup's one-shot gradient of the output entropy
w.r.t. the superposition weights), then predicts with that mask and head. ``inference_scope: batch``
decides once per test batch; it is an explicit option because on single-task batches it leaks the
task identity.

On purpose unlike the official code: no checkpoint selection on test data (the last epoch is kept), a cosine schedule per phase without the mis-signed plateau
scheduler, KKT features under ``no_grad``, and a dense head chunk per experience instead of a masked
classifier (it trains only in its own experience, so forgetting is unaffected).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.pet.supermask import SupermaskLayer
from clpeft.strategies.base import CLStrategy, Phase, register
from clpeft.utils.typed import option

KKT_MODES = ("best", "always", "all", None)
TASK_INFERENCE = ("entropy", "oneshot")
SCOPES = ("sample", "batch")


def knn_accuracy(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, test_y: torch.Tensor, k: int) -> float:
    """Euclidean kNN majority vote (ties → the smaller label), as the official KKT."""
    nearest = torch.cdist(test_f, train_f).topk(k, dim=1, largest=False).indices
    votes = train_y[nearest].mode(dim=1).values
    return float((votes == test_y).float().mean())


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@register("exssnet")
class ExSSNeT(CLStrategy):
    accepts_pet = ("supermask",)  # one supermask per experience
    requires_pet = True
    loss_scope = "current"  # each experience's head chunk trains on its own classes
    keeps = ("tasks", "used", "record")
    task_conditioned = True
    exclusive = True          # ExSSNeT: only weights no earlier mask uses are editable
    default_weight_phase = True

    @dataclass
    class Options:
        weight_epochs: int | None = option(None, "epochs of the weight phase (null: train.epochs; supsup: 0)", ge=0)
        mask_lr: float | None = option(None, "learning rate of the mask phase (null: train.lr)", gt=0.0)
        weight_lr: float | None = option(None, "learning rate of the weight phase (null: train.lr)", gt=0.0)
        kkt: str | None = option(None, "KKT initialisation of a new mask from earlier ones", choices=KKT_MODES)
        kkt_k: int = option(200, "KKT's kNN neighbours (clamped to the kNN train points)", ge=1)
        kkt_fraction: float = option(0.2, "share of the experience's training batches KKT looks at", gt=0.0, le=1.0)
        task_inference: str = option("entropy", "how class-IL evaluation picks a sample's mask", choices=TASK_INFERENCE)
        inference_scope: str = option("sample", "decide the task per sample, or once per test batch (leaks the task "
                                                "on single-task batches)", choices=SCOPES)
        schedule: str = option("cosine", "learning-rate schedule of each phase", choices=("cosine", "constant"))

    @classmethod
    def check_config(cls, options, settings) -> None:
        if not cls.default_weight_phase and options.weight_epochs:
            raise ClpeftError("supsup trains masks only; use ssnet or exssnet for a weight phase (drop options.weight_epochs)")

    def setup(self):
        o = self.options
        if o.weight_epochs is None:
            self.weight_epochs = self.settings.epochs if self.default_weight_phase else 0
        else:
            self.weight_epochs = o.weight_epochs
        self.task_inference, self.inference_scope = o.task_inference, o.inference_scope
        self.layers = {n: layer for n, layer in self.pet.layers.items() if isinstance(layer, SupermaskLayer)}
        if o.kkt and not all(layer.keep_scores for layer in self.layers.values()):
            raise ClpeftError(f"{self.name}'s kkt starts a new mask from earlier masks' scores, which "
                              "pet_settings.keep_scores: false drops; keep the scores or set options.kkt: null")
        self.tasks: list[str] = []                 # PET instance (mask) of each learned experience, in order
        self.used: dict[str, torch.Tensor] = {}    # per layer: weights inside some finished task's mask
        self.snapshot = None
        self.record = {"mask_overlap": [], "editable_fraction": [], "kkt": []}

    # ------------------------------------------------------------------ what trains, in which phase
    def phases(self) -> list[Phase]:
        mask = Phase("mask", self.settings.epochs, lr=self.options.mask_lr)
        if not self.weight_epochs:
            return [mask]
        return [mask, Phase("weights", self.weight_epochs, lr=self.options.weight_lr)]

    def trainable_parameters(self):
        head = self.current_head_parameters()
        if self.phase is not None and self.phase.name == "weights":
            return [layer.base.weight for layer in self.layers.values()] + head
        return (self.pet.parameters(self.tasks[-1]) if self.tasks else []) + head

    def make_scheduler(self, optimizer, phase):
        if self.options.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(phase.epochs, 1))
        return None

    # ------------------------------------------------------------------ one experience
    def before_experience(self):
        name = self.add_pet_instance(f"task{len(self.tasks)}")  # every task gets its own mask
        self.pet.activate(name)
        self.tasks.append(name)
        self.chunks_before = len(self.model.head.chunks)

    def start_phase(self):
        if self.phase.name == "mask":
            if len(self.model.head.chunks) != self.chunks_before + 1:
                raise ClpeftError(f"{self.name} needs new classes in every experience (a class-incremental stream)")
            t = len(self.tasks) - 1
            if t > 0 and self.options.kkt:
                self._kkt_init(t)
        else:
            self.snapshot = {n: layer.base.weight.detach().clone() for n, layer in self.layers.items()}

    def end_phase(self):
        if self.phase.name == "weights":
            self.snapshot = None
            return
        name = self.tasks[-1]  # the mask phase is over: cache the mask and decide what the weight phase may edit
        self.masks = {}
        for lname, layer in self.layers.items():
            layer.freeze(name)
            self.masks[lname] = layer.frozen_mask(name)
        self.freeze(self.pet.parameters(name))
        kept = sum(int(m.sum()) for m in self.masks.values())
        shared = sum(int((m & self.used[n]).sum()) for n, m in self.masks.items() if n in self.used)
        self.record["mask_overlap"].append(shared / max(kept, 1))
        self.editable = {n: (m & ~self.used[n]) if (self.exclusive and n in self.used) else m.clone()
                         for n, m in self.masks.items()}
        editable = sum(int(e.sum()) for e in self.editable.values()) if self.weight_epochs else 0
        self.record["editable_fraction"].append(editable / sum(m.numel() for m in self.masks.values()))

    def after_backward(self):
        if self.phase.name == "weights":
            for n, layer in self.layers.items():
                if layer.base.weight.grad is not None:
                    layer.base.weight.grad.mul_(self.editable[n])

    @torch.no_grad()
    def after_step(self):
        if self.phase.name == "weights":  # weight decay or momentum must not move protected weights either
            for n, layer in self.layers.items():
                layer.base.weight.copy_(torch.where(self.editable[n], layer.base.weight, self.snapshot[n]))

    def after_experience(self):
        for n, m in self.masks.items():
            self.used[n] = self.used[n] | m if n in self.used else m.clone()

    # ------------------------------------------------------------------ KKT
    @torch.no_grad()
    def _kkt_init(self, t: int) -> None:
        """scores_t ← scores of the earlier mask(s) whose features best kNN-classify this experience."""
        n_batches = math.ceil(self.options.kkt_fraction * self.steps_per_epoch) + 1
        xs, ys = [], []
        for i, batch in enumerate(self.training_batches()):
            if i >= n_batches:
                break
            xs.append(batch[0])
            ys.append(batch[1])
        x, y = torch.cat(xs).to(self.device), torch.cat(ys).to(self.device)
        n_train = int(0.66 * len(y))
        entry = {"task": t, "accuracies": [], "sources": []}
        if n_train < 1 or len(y) - n_train < 1:
            entry["skipped"] = f"{len(y)} samples are too few for kNN"
            self.record["kkt"].append(entry)
            return
        k = min(self.options.kkt_k, n_train)
        with self.eval_mode():
            for name in self.tasks[:-1]:
                with self.pet.using(name):
                    f = self.model.features(x).float()
                entry["accuracies"].append(knn_accuracy(f[:n_train], y[:n_train], f[n_train:], y[n_train:], k))
        accs = torch.tensor(entry["accuracies"])
        chance = 1.0 / len(self.current_classes)
        if self.options.kkt == "all":
            sources = [i for i, a in enumerate(entry["accuracies"]) if a > chance]
        elif self.options.kkt == "always" or float(accs.max()) > chance:
            sources = [int(accs.argmax())]
        else:
            sources = []
        entry["sources"], entry["k"] = sources, k
        self.record["kkt"].append(entry)
        if sources:
            new = self.pet.named_parameters(self.tasks[-1])
            olds = [self.pet.named_parameters(self.tasks[i]) for i in sources]
            for key, p in new.items():
                p.copy_(torch.stack([o[key] for o in olds]).mean(0))

    # ------------------------------------------------------------------ evaluation
    def _ranges(self) -> list[tuple[int, int]]:
        ranges, start = [], 0
        for chunk in self.model.head.chunks:
            ranges.append((start, start + chunk.out_features))
            start += chunk.out_features
        return ranges

    def _under(self, x: torch.Tensor, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits restricted to the task's own classes, features) with the task's mask and BN."""
        with self.pet.using(self.tasks[task]), self.autocast():
            features = self.model.features(x)
            logits = self.model.head(features).float()
        a, b = self._ranges()[task]
        local = torch.full_like(logits, UNSEEN_LOGIT)
        local[:, a:b] = F.log_softmax(logits[:, a:b], dim=-1)
        return local, features

    def _oneshot_gradients(self, x: torch.Tensor) -> torch.Tensor:
        """SupSup: ∂ entropy / ∂ α at α = 1/T under the superposed masks, per sample ([T, B])."""
        T = len(self.tasks)
        seen = self.model.head.num_seen
        with torch.enable_grad():
            alphas = torch.full((x.shape[0], T), 1.0 / T, device=x.device, requires_grad=True)
            with self.pet.mixing(self.tasks, alphas), self.autocast():
                logits = self.model(x)[:, :seen]
            (grad,) = torch.autograd.grad(entropy(logits).sum(), alphas)
        return grad.T

    def _routed(self, x: torch.Tensor, task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's (logits, features) under its own task's mask: one forward per distinct task."""
        logits = features = None
        for t in task.unique().tolist():
            rows = task == t
            lt, ft = self._under(x[rows], t)
            if logits is None:
                logits = lt.new_empty(x.shape[0], lt.shape[1])
                features = ft.new_empty(x.shape[0], *ft.shape[1:])
            logits[rows], features[rows] = lt, ft
        return logits, features

    def predict(self, x: torch.Tensor) -> Prediction:
        T = len(self.tasks)
        if T == 0:
            return super().predict(x)
        if self.task_inference == "entropy":  # every mask's forward is needed to compare entropies
            outs = [self._under(x, t) for t in range(T)]
            score = torch.stack([entropy(lt[:, a:b]) for (lt, _), (a, b) in zip(outs, self._ranges())])
        else:
            outs, score = None, self._oneshot_gradients(x)
        task = score.mean(1).argmin().expand(x.shape[0]) if self.inference_scope == "batch" else score.argmin(0)
        if outs is None:
            logits, features = self._routed(x, task)
        else:
            rows = torch.arange(x.shape[0], device=x.device)
            logits = torch.stack([o[0] for o in outs])[task, rows]
            features = torch.stack([o[1] for o in outs])[task, rows]
        return Prediction(logits=logits, features=features, task=task)

    def predict_given_task(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        return self._routed(x, task_ids)[0]

    def prepare_model_state(self, state: dict) -> None:
        for name in self.tasks:  # finished tasks' masks are cached buffers in the saved state
            for layer in self.layers.values():
                layer.freeze(name)

    def after_resume(self, train_stream) -> None:
        for name in self.tasks:
            self.freeze(self.pet.parameters(name))

    def summary(self) -> dict:
        return {"variant": self.name, "tasks": list(self.tasks), "task_inference": self.task_inference,
                "inference_scope": self.inference_scope, **self.record}

    def report_metrics(self) -> dict:
        """Share of the last mask inside earlier masks: how much the tasks had to share."""
        return {"mask overlap (last)": self.record["mask_overlap"][-1]} if self.record["mask_overlap"] else {}


@register("ssnet")
class SSNeT(ExSSNeT):
    """ExSSNeT without exclusivity: the weight phase edits every weight of the current mask."""

    exclusive = False


@register("supsup")
class SupSup(ExSSNeT):
    """Masks only (Wortsman et al., 2020): the shared weights never train."""

    default_weight_phase = False
