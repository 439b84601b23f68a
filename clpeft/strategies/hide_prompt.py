"""HiDe-Prompt (Wang et al., NeurIPS 2023): hierarchical decomposition into task-identity inference (TII), within-task
prediction (WTP) with one prefix prompt per experience, and task-adaptive prediction (TAP) on sampled features.

- **TII** (:class:`~clpeft.models.task_router.TaskRouter`): on the frozen backbone's features, a residual MLP and a
  linear head train in their own phase of every experience (``router_epochs`` at ``router_lr``) with the
  cross-entropy over the experience's classes; each class's training features are summarised by ``centroids``
  k-means centroids with diagonal variances; from the second experience on, the router's MLP and head re-fit on
  samples of every seen class's centroids (TAP: ``ca_epochs``, SGD ``ca_lr``, cosine).
- **WTP**: a prefix prompt per experience in ``e_blocks`` (``length`` tokens per block, half keys and half values,
  U(−1, 1)); experience t's starts as a copy of t − 1's and trains, with the head (rate × ``head_lr_scale``), as
  (1 − m)·prompt_t + m·mean(prompt_<t) in the forward (``prompt_momentum`` m); loss = cross-entropy over the
  experience's classes + ``reg`` · :func:`~clpeft.losses.prototype_contrastive` against the earlier classes'
  centroids. After training, prompt_t ← (1 − m)·prompt_t + m·mean(prompt_<t)
  (:meth:`~clpeft.pet.inject.PETController.average_into`); the new classes' centroids under prompt_t; from the
  second experience on, the head re-fits on samples of every seen class's centroids (TAP).
- **Prediction**: the router picks a class among the seen ones, hence an experience, hence a prompt; a second
  pass with that prompt gives the head's logits (two passes). The routed experience is reported as task inference.

The prompts are laid out per head as prefix tuning requires: each sample gets its own prompt's keys and values.
The official code reshapes [layers, 2, B, …] into [layers, B, 2, …] without permuting, so in a batch sample b gets
the keys and values of samples 2b and 2b + 1 (mod B) — in training, with one prompt for the batch, half the batch
gets the prompt's keys twice and half its values twice (``reports/parity/hide_prompt.md``).
TAP steps once per earlier class per epoch (``n_old`` minibatches of the shuffled samples), as the official code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.losses import prototype_contrastive
from clpeft.models.head_alignment import CentroidSampler, ClassCentroids, align_head
from clpeft.models.heads import UNSEEN_LOGIT
from clpeft.models.task_router import TaskRouter
from clpeft.pet.pool import PromptPool, check_prompt_per_experience, check_uniform_init
from clpeft.strategies.base import CLStrategy, Phase, register
from clpeft.utils.typed import check_milestones, option


@register("hide_prompt")
class HiDePrompt(CLStrategy):
    accepts_pet = False  # the method owns its prompts
    loss_scope = "current"
    keeps = ("centroids", "router_centroids")

    @dataclass
    class Options:
        pool_size: int | None = option(None, "prompts (null: one per experience)", ge=1)
        length: int = option(10, "tokens per prompt and block, half keys and half values (official: 5 + 5 CIFAR, "
                                 "20 + 20 ImageNet-R)", ge=2)
        e_blocks: list[int] = option(default_factory=lambda: [0, 1, 2, 3, 4], doc="blocks with the prompts")
        init_low: float = option(-1.0, "prompts ~ U(init_low, init_high)")
        init_high: float = option(1.0, "prompts ~ U(init_low, init_high)")
        prompt_momentum: float = option(0.01, "weight of the earlier prompts' mean in the prompt (forward and after "
                                              "training)", ge=0.0, le=1.0)
        reg: float = option(0.1, "weight of the prototype-contrastive term (official: 0.1 CIFAR, 0.5 ImageNet-R)",
                            ge=0.0)
        contrast_tau: float = option(0.8, "temperature of the prototype-contrastive term", gt=0.0)
        head_lr_scale: float = option(0.1, "the head's learning rate as a fraction of the prompts'", gt=0.0)
        router_epochs: int | None = option(None, "epochs of the task-identity router per experience (null: "
                                                 "train.epochs)", ge=1)
        router_lr: float | None = option(None, "learning rate of the router (null: train.lr)", gt=0.0)
        router_ratio: int = option(2, "hidden width of the router's MLP, in multiples of the feature width", ge=1)
        centroids: int = option(10, "k-means centroids per class (TAP's and the contrastive term's statistics)", ge=1)
        ca_epochs: int = option(30, "epochs of TAP from the second experience (0: none)", ge=0)
        ca_lr: float = option(0.005, "learning rate of TAP", gt=0.0)
        router_ca_lr: float | None = option(None, "learning rate of the router's TAP (null: ca_lr; the official "
                                                  "router program scales it by batch/256)", gt=0.0)
        ca_samples: int | None = option(None, "features sampled per centroid and epoch (null: train.batch_size)", ge=1)
        ca_weight_decay: float = option(0.0, "weight decay of TAP (official: its weight decay, 0)", ge=0.0)
        milestones: list[int] | None = option(None, "epochs at which the prompts' and head's rate is × 0.1 (the "
                                                    "official CIFAR-100 step schedule; null: train.schedule)")

    @classmethod
    def check_config(cls, options, settings) -> None:
        check_uniform_init("hide_prompt", options.init_low, options.init_high)
        check_milestones(options.milestones, "options.milestones of hide_prompt")
        if options.length % 2:
            raise ClpeftError(f"hide_prompt's prompts split their tokens between keys and values: options.length must "
                              f"be even (got {options.length}); e.g. --option length={options.length + 1}")
        if not options.e_blocks:
            raise ClpeftError("hide_prompt needs at least one block with prompts; e.g. options.e_blocks: [0, 1, 2, 3, 4]")

    @classmethod
    def check_run(cls, options, settings, experience_sizes) -> list[int]:
        skipped = super().check_run(options, settings, experience_sizes)
        check_prompt_per_experience("hide_prompt", options.pool_size, experience_sizes)
        return skipped

    def setup(self):
        o, net = self.options, self.model.backbone
        size = o.pool_size or self.n_experiences
        if size is None:
            raise ClpeftError("hide_prompt sizes its prompt pool by the stream's length, which is unknown here: set "
                              "options.pool_size")
        self.pool = PromptPool(net, size, o.length, o.e_blocks, net.num_features, init=(o.init_low, o.init_high),
                               keys=False)
        dim, classes = net.num_features, self.model.head.num_classes
        self.router = TaskRouter(dim, classes, o.router_ratio).to(self.device)
        self.model.extras["hide_prompts"] = self.pool
        self.model.extras["hide_router"] = self.router
        self.centroids = ClassCentroids(dim, classes, o.centroids)          # instructed features (WTP)
        self.router_centroids = ClassCentroids(dim, classes, o.centroids)   # frozen features (TII)
        self._features = None

    # ------------------------------------------------------------------ the experience
    def before_experience(self):
        t = self.experience_index
        if t >= self.pool.size:
            raise ClpeftError(f"hide_prompt has {self.pool.size} prompts; experience {t} needs one more (raise "
                              "options.pool_size)")
        if t > 0:  # the new prompt starts where the last one ended
            self.pool.pet.load_state_dict(self.pool.pet.state_dict(self.pool.names[t - 1]), self.pool.names[t])
        self.router.learn_classes(self.current_classes, t)

    def phases(self):
        if not super().phases():
            return []
        o = self.options
        return [Phase("router", o.router_epochs or self.settings.epochs, o.router_lr),
                Phase("train", self.settings.epochs)]

    def trainable_parameters(self):
        router = list(self.router.parameters())
        prompts = self.pool.prompt_parameters(self.experience_index, self.experience_index + 1) + list(
            self.model.head.parameters())
        if self.phase is None:
            return router + prompts
        return router if self.phase.name == "router" else prompts

    def optimizer_groups(self, params):
        rest, head = self.split_head(params)
        if not head:  # the router's phase
            return [{"params": rest}]
        return [{"params": rest}, {"params": head, "lr": self.settings.lr * self.options.head_lr_scale}]

    def make_scheduler(self, optimizer, phase):
        if phase.name == "train" and self.options.milestones:
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, self.options.milestones, gamma=0.1)
        return super().make_scheduler(optimizer, phase)

    def _prompt_weights(self, t: int) -> torch.Tensor:
        """[1, t + 1]: (1 − m) on prompt t, m/t on each earlier one (prompt t alone in the first experience)."""
        m = self.options.prompt_momentum if t > 0 else 0.0
        w = torch.full((1, t + 1), m / max(t, 1), device=self.device)
        w[0, t] = 1.0 - m
        return w

    def training_logits(self, x):
        if self.phase.name == "router":
            return self.router(self.frozen_features(x))
        with self.pool.weighted(self._prompt_weights(self.experience_index)), self.autocast():
            self._features = self.model.features(x)
            return self.model.head(self._features)

    def training_loss(self, logits, y, x):
        loss = super().training_loss(logits, y, x)
        if self.phase.name == "router" or self.options.reg == 0:
            return loss
        old = self.centroids.centroids() if self.centroids.fitted.any() else None
        return loss + self.options.reg * prototype_contrastive(self._features, old, self.options.contrast_tau)

    def after_experience(self):
        t, o = self.experience_index, self.options
        self._features = None
        if t > 0 and o.prompt_momentum > 0:
            self.pool.pet.average_into(self.pool.names[t], self.pool.names[:t], 1.0 - o.prompt_momentum)
        data, seed = self.experience_data, self.seed * 1000 + t
        frozen, y = self.extract_features(data, features=self.frozen_features)
        self.router_centroids.fit(frozen, y, seed)

        def instructed(x):  # features under prompt t alone
            with self.pool.concatenated(torch.full((x.shape[0], 1), t, dtype=torch.long, device=x.device)):
                return self.model.features(x)

        features, y = self.extract_features(data, features=instructed)
        self.centroids.fit(features, y, seed)
        if t > 0 and o.ca_epochs > 0:
            seen, n_old = self.model.head.num_seen, self.current_classes.start
            self._tap(self.router, self.router_centroids, seen, n_old, 800 + t, o.router_ca_lr or o.ca_lr)
            self._tap(self.model.head, self.centroids, seen, n_old, 900 + t, o.ca_lr)

    def _tap(self, module, centroids: ClassCentroids, seen: int, n_old: int, offset: int, lr: float) -> None:
        """Task-adaptive prediction: ``module`` (the router or the head) re-fitted on samples of every seen class's
        centroids, one minibatch per earlier class per epoch."""
        o = self.options
        n = o.ca_samples or self.settings.batch_size
        with self.eval_mode():
            align_head(module, list(module.parameters()), CentroidSampler(centroids, range(seen)), epochs=o.ca_epochs, lr=lr,
                       samples_per_class=n, batch_size=n, generator=self.generator(offset),
                       weight_decay=o.ca_weight_decay, logits=lambda out: out[:, :seen],
                       device=self.device, steps=n_old)

    # ------------------------------------------------------------------ evaluation
    def predict(self, x: torch.Tensor) -> Prediction:
        seen = self.model.head.num_seen
        if seen == 0 or not self.centroids.fitted.any():
            return super().predict(x)
        router = self.router(self.frozen_features(x))
        task = self.router.experience_of(router, seen)
        with self.pool.concatenated(task.unsqueeze(1)), self.autocast():
            features = self.model.features(x)
            logits = self.model.head(features)
        router[:, seen:] = UNSEEN_LOGIT
        return Prediction(logits=logits, features=features, task=task, views={"task-identity router": router})

    def summary(self) -> dict:
        return {"prompts": self.pool.size, "parameters_per_prompt": self.pool.pet.num_parameters(self.pool.names[0]),
                "router_parameters": sum(p.numel() for p in self.router.parameters()),
                "forward_passes_per_test_sample": 2}
