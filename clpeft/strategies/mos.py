"""MOS, "Model Surgery" (Sun et al., AAAI 2025): one adapter that continues across experiences, pulled toward the mean
of its earlier snapshots, a snapshot per experience, and a per-sample choice of snapshot that refines itself.

- **Learning**: a single PET instance (``current``; the scenario's AdaptFormer adapter) trains in every experience
  with the model's linear head (rate × ``head_lr_scale``), cross-entropy over the experience's classes plus ``reg`` ·
  :func:`~clpeft.losses.prototype_contrastive` of the batch's features against the stored class means (τ 0.8).
  From experience t ≥ 1 it is pulled toward μ_t, the mean of the snapshots 0..t−1 (``adapter_momentum``):
  ``ema_mode: per_step`` pulls once after each optimizer step (the paper); ``per_block_forward`` is what the
  official code runs (``backbone/vit_mos.py``): every forward with snapshot k ≥ 1 (or the current adapter) pulls
  *all* its layers once per block, so layer l computes after l + 1 pulls and every layer ends a forward L pulls
  further — in training, in the statistics pass, and at evaluation, where a stored snapshot k ≥ 1 drifts to μ_k
  within a few test batches — plus the once-per-step pull. μ_k is kept as the running sums of the snapshots as
  they were stored, as that code keeps them. In this mode results depend on the evaluation batch size (how many
  forwards move the snapshots), as the official numbers depend on its test loader's; the scenario entries test in
  batches of the training batch, as that loader does.
- **After an experience**: a frozen snapshot ``e<t>`` of the current adapter; each new class's mean and covariance
  of its features under the current adapter (class by class, batches of 3 × batch size, as the official pass);
  from t ≥ 1 the head is re-fitted on features sampled from every seen class's Gaussian
  (:func:`~clpeft.models.head_alignment.align_head`: ``ca_epochs``, SGD ``ca_lr``, cosine); a cosine prototype
  of each new class under snapshot 0.
- **Prediction**: features under every snapshot (:class:`~clpeft.pet.multipass.MultiPassFeatures`, t + 1 passes);
  the cosine prototypes under snapshot 0 pick a class, hence an experience; per sample, up to ``refine_rounds``
  times, the head on that experience's snapshot features names a class whose experience becomes the next choice,
  until it stays; the output is softmax(head logits at the choice) + softmax((t + 1) · prototype cosines)
  (``ensemble``). The choice is reported as task inference.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.evaluation.prediction import Prediction
from clpeft.losses import prototype_contrastive
from clpeft.models.class_stats import ClassStatistics
from clpeft.models.head_alignment import GaussianSampler, align_head
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.pet.multipass import MultiPassFeatures
from clpeft.streams.stream import Subset
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option

CURRENT = "current"


def refine_choice(head_logits: torch.Tensor, start: torch.Tensor, task_of: torch.Tensor, rounds: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """MOS's self-refinement, per sample b: with choice k, the logits are ``head_logits[b, k]``; the experience of
    their argmax becomes the next choice, until it equals the current one or ``rounds`` logits were computed.
    Returns (the logits at the last choice [B, C], the last choice [B])."""
    rows = torch.arange(len(start), device=start.device)
    choice, done = start.clone(), torch.zeros_like(start, dtype=torch.bool)
    final = head_logits[rows, choice]
    for r in range(1, rounds + 1):
        logits = head_logits[rows, choice]
        final = torch.where(done.unsqueeze(1), final, logits)
        new = task_of[logits.argmax(1)]
        stop = done | (new == choice) | (r >= rounds)
        choice = torch.where(stop, choice, new)
        done = stop
    return final, choice


@register("mos")
class MOS(CLStrategy):
    accepts_pet = ("adapter", "lora")
    requires_pet = True
    loss_scope = "current"
    keeps = ("names", "prefix_sums", "stats", "prototypes", "class_task")

    @dataclass
    class Options:
        reg: float = option(0.1, "weight of the prototype-contrastive term", ge=0.0)
        contrast_tau: float = option(0.8, "temperature of the prototype-contrastive term", gt=0.0)
        adapter_momentum: float = option(0.1, "pull of the adapter toward its snapshots' mean (0: none)", ge=0.0, le=1.0)
        ema_mode: str = option("per_block_forward", "per_block_forward: as the official code runs (a pull per block "
                               "in every forward, and after each step); per_step: only after each step (the paper)",
                               choices=("per_block_forward", "per_step"))
        head_lr_scale: float = option(0.1, "the head's learning rate as a fraction of train.lr", gt=0.0)
        ca_epochs: int = option(30, "epochs of classifier alignment from the second experience (0: none)", ge=0)
        ca_lr: float = option(0.005, "learning rate of classifier alignment", gt=0.0)
        ca_samples: int | None = option(None, "features sampled per class and epoch (null: 5 × train.batch_size)", ge=1)
        covariance_ridge: float = option(1e-4, "added to each class covariance's diagonal", gt=0.0)
        refine_rounds: int = option(4, "head evaluations per sample in the self-refining choice", ge=1)
        ensemble: bool = option(True, "add the snapshot-0 prototype softmax to the refined head's")

    def setup(self):
        dim, classes = self.model.backbone.num_features, self.model.head.num_classes
        self.names: list[str] = []              # the snapshots e0, e1, …
        self.prefix_sums: list[dict] = []       # Σ of snapshots 0..k as stored (per_block_forward's anchors)
        self.stats = ClassStatistics(dim, classes, class_second_moments=True)
        self.prototypes = torch.zeros(classes, dim, device=self.device)
        self.class_task = torch.full((classes,), -1, dtype=torch.long, device=self.device)
        self.passes = MultiPassFeatures(self.model.backbone, self.pet)
        self._features = None

    # ------------------------------------------------------------------ the adapter's pulls
    def _anchor_pulls(self, name: str, k: int, times: list[int]) -> None:
        """Pull layer l of instance ``name`` ``times[l]`` times toward μ_k = (Σ snapshots 0..k−1)/k, with the
        official arithmetic: θ ← (1 − m)·θ + m·S/k, written as new tensors as its ``.data =`` writes are, so that a
        backward uses the values each layer computed with (in-place writes change the gradients:
        ``reports/parity/mos.md``)."""
        m, sums = self.options.adapter_momentum, self.prefix_sums[k - 1]
        with torch.no_grad():
            for n, (target, layer) in zip(times, self.pet.layers.items()):
                params = [(f"{target}.{pname}", p) for pname, p in layer.instances[name].named_parameters()]
                for _ in range(n):
                    for key, p in params:
                        p.data = (1 - m) * p.data + m * sums[key] / k

    @contextmanager
    def _as_run(self, name: str, k: int):
        """A forward with instance ``name`` at anchor k, as the official forward changes it (per_block_forward)."""
        if self.options.ema_mode != "per_block_forward" or k == 0 or self.options.adapter_momentum == 0:
            yield
            return
        depth = len(self.pet.layers)
        self._anchor_pulls(name, k, [l + 1 for l in range(depth)])
        yield
        self._anchor_pulls(name, k, [depth - l - 1 for l in range(depth)])

    def _current_features(self, x: torch.Tensor) -> torch.Tensor:
        with self.pet.using(CURRENT), self._as_run(CURRENT, self.experience_index):
            return self.model.features(x)

    # ------------------------------------------------------------------ the experience
    def before_experience(self):
        if CURRENT not in self.pet.names:
            self.add_pet_instance(CURRENT)
        self.pet.activate(CURRENT)
        self.class_task[self.current_classes.start:self.current_classes.stop] = self.experience_index

    def trainable_parameters(self):
        return self.pet.parameters(CURRENT) + list(self.model.head.parameters()) if CURRENT in self.pet.names else []

    def optimizer_groups(self, params):
        body, head = self.split_head(params)
        return [{"params": body}, {"params": head, "lr": self.settings.lr * self.options.head_lr_scale}]

    def training_logits(self, x):
        with self.autocast():
            self._features = self._current_features(x)
            return self.model.head(self._features)

    def training_loss(self, logits, y, x):
        loss = super().training_loss(logits, y, x)
        if self.options.reg == 0:
            return loss
        old = self.stats.seen()
        means = self.stats.means()[old].float() if len(old) else None
        return loss + self.options.reg * prototype_contrastive(self._features, means, self.options.contrast_tau)

    def after_step(self):
        t, m = self.experience_index, self.options.adapter_momentum
        if t == 0 or m == 0:
            return
        if self.options.ema_mode == "per_block_forward":
            self._anchor_pulls(CURRENT, t, [1] * len(self.pet.layers))
        else:
            self.pet.average_into(CURRENT, self.names[:t], 1 - m)

    def after_experience(self):
        t = self.experience_index
        self._features = None
        snapshot = f"e{t}"
        self.pet.add(snapshot, copy_from=CURRENT)
        self.freeze(self.pet.parameters(snapshot))
        self.names.append(snapshot)
        if self.options.ema_mode == "per_block_forward":
            state = self.pet.state_dict(CURRENT)
            self.prefix_sums.append({k: v + self.prefix_sums[-1][k] for k, v in state.items()} if self.prefix_sums
                                    else state)
        data = self.experience_data
        labels = torch.as_tensor(list(data.targets))
        for c in self.current_classes:  # the statistics under the current adapter, class by class
            part = Subset(data, torch.nonzero(labels == c).flatten().tolist())
            features, y = self.extract_features(part, features=self._current_features,
                                                batch_size=3 * self.settings.batch_size)
            self.stats.add(features, y)
        if t >= 1 and self.options.ca_epochs > 0:
            self.align()
        features, y = self.extract_features(data, features=self._snapshot_zero)
        for c in self.current_classes:
            self.prototypes[c] = features[y == c].mean(0)
        self.pet.activate(None)

    def _snapshot_zero(self, x: torch.Tensor) -> torch.Tensor:
        with self.pet.using(self.names[0]):
            return self.model.features(x)

    def align(self) -> None:
        o, seen = self.options, self.model.head.num_seen
        n = o.ca_samples or 5 * self.settings.batch_size
        with self.eval_mode():
            align_head(self.model.head, list(self.model.head.parameters()), GaussianSampler(self.stats, range(seen), o.covariance_ridge),
                       epochs=o.ca_epochs, lr=o.ca_lr, samples_per_class=n, batch_size=n,
                       generator=self.generator(600 + self.experience_index),
                       weight_decay=self.settings.weight_decay, logits=lambda out: out[:, :seen], device=self.device)

    # ------------------------------------------------------------------ evaluation
    def _around(self, name: str):
        return self._as_run(name, self.names.index(name)) if name in self.names else nullcontext()

    def predict(self, x: torch.Tensor) -> Prediction:
        if not self.names:
            return super().predict(x)
        seen, t = self.model.head.num_seen, len(self.names) - 1
        with self.autocast():
            features = self.passes(self.model.adapter(x), self.names, around=self._around).float()   # [B, K, D]
        b, k, _ = features.shape
        protos = F.linear(F.normalize(features[:, 0], dim=-1), F.normalize(self.prototypes[:seen], dim=-1))
        task_of = self.class_task[:seen]
        head = self.model.head(features.flatten(0, 1))[:, :seen].view(b, k, seen)
        final, choice = refine_choice(head, task_of[protos.argmax(1)], task_of, self.options.refine_rounds)
        out = F.softmax(final, 1) + F.softmax(protos * (t + 1), 1) if self.options.ensemble else final

        def full(logits):
            return torch.cat([logits, logits.new_full((b, self.model.head.num_classes - seen), UNSEEN_LOGIT)], 1)

        return Prediction(logits=full(out), features=features[:, 0], task=choice,
                          views={"prototypes (snapshot 0)": full(protos), "refined head": full(final)})

    # ------------------------------------------------------------------ records and resume
    def after_resume(self, train_stream) -> None:
        for name in self.names:  # snapshots never train
            self.freeze(self.pet.parameters(name))
        self.prototypes, self.class_task = self.prototypes.to(self.device), self.class_task.to(self.device)
        self.prefix_sums = [{k: v.to(self.device) for k, v in s.items()} for s in self.prefix_sums]

    def summary(self) -> dict:
        return {"snapshots": len(self.names), "ema_mode": self.options.ema_mode,
                "parameters_per_snapshot": self.pet.num_parameters(self.names[0]) if self.names else 0,
                "forward_passes_per_test_sample": len(self.names)}
