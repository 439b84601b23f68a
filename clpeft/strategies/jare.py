"""JARe/DTKR (Peng et al., ICLR 2024): retrieve task-specific low-rank increments per sample, no task id.

A frozen query (the backbone's features with every increment off) is compared with grouped keys; each
experience brings ``slots`` new key sets, fitted on that experience's queries only, and one LoRA
increment per slot (``--pet lora`` on the attention output projections, from the scenario). A sample
runs with the similarity-weighted top-k increments of *its own* query, in one batched forward (the PET
bank's sparse mixture). The official code retrieves once per batch, which leaks the task when test
batches are single-task: here that is the labelled option ``retrieval: batch``. What differs from the
base loop: the query forward, key fitting before each experience, retrieval in ``forward``/``predict``,
and old slots and keys frozen after their experience.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clpeft.errors import ClpeftError
from clpeft.evaluation.prediction import Prediction
from clpeft.strategies.base import CLStrategy, register
from clpeft.utils.typed import option

RETRIEVALS = ("sample", "batch")
TRAIN_SLOTS = ("current", "joint")


def grouped_cosine(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``sim[b, g, p] = cos(q_{b,g}, K_{g,p})`` for queries [B, d] and keys [G, P, d/G]."""
    G = keys.shape[0]
    q = F.normalize(queries.float().reshape(queries.shape[0], G, -1), dim=-1)
    return torch.einsum("bgc,gpc->bgp", q, F.normalize(keys.float(), dim=-1))


def retrieve(queries: torch.Tensor, keys: torch.Tensor, top_k: int, per_sample: bool = True,
             allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(index [B, k], weights [B, k]): each sample's top-k slots by mean grouped cosine, weights ∝ the
    (clamped) similarities. ``per_sample=False`` scores the batch's mean (the official retrieval)."""
    score = grouped_cosine(queries, keys).mean(1)  # [B, P]
    if allowed is not None:
        score = score.masked_fill(~allowed, float("-inf"))
    if not per_sample:
        score = score.mean(0, keepdim=True).expand_as(score)
    k = min(top_k, int(allowed.sum()) if allowed is not None else score.shape[1])
    values, index = score.topk(k, dim=1)
    weights = values.clamp_min(0) + 1e-6
    return index, weights / weights.sum(1, keepdim=True)


def fit_keys(queries: torch.Tensor, slots: int, groups: int, generator: torch.Generator, epochs: int = 3,
             lr: float = 5e-4, batch_size: int = 16, dropout: float = 0.25, pull_top: int = 2) -> torch.Tensor:
    """Keys [G, P, d/G] for one experience: group-average init (its queries split at random into ``slots``
    parts), then SLM's key loss −mean cos of each (sample, group)'s top ``pull_top`` keys after key dropout;
    AdamW (wd 0.01), StepLR(2, 0.1), gradient-norm clip 0.1."""
    n, d = queries.shape
    if d % groups:
        raise ClpeftError(f"query dimension {d} is not divisible by groups={groups}; pick a divisor")
    perm = torch.randperm(n, generator=generator)
    init = torch.stack([queries[perm[p::slots]].mean(0) if len(perm[p::slots]) else queries.mean(0)
                        for p in range(slots)])                                # [P, d]
    keys = torch.nn.Parameter(init.reshape(slots, groups, d // groups).transpose(0, 1).contiguous())
    optimizer = torch.optim.AdamW([keys], lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.1)
    k = min(pull_top, slots)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            sim = grouped_cosine(queries[order[start:start + batch_size]], keys)
            drop = torch.rand(sim.shape, generator=generator) < dropout
            chosen = sim.masked_fill(drop, -100.0).topk(k, dim=-1).indices
            loss = -sim.gather(-1, chosen).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([keys], 0.1)
            optimizer.step()
        scheduler.step()
    return keys.detach()


@register("jare")
class JARe(CLStrategy):
    """Each experience brings ``slots`` key sets and LoRA increments; a sample mixes its top-k by similarity."""

    keeps = ("keys", "slot_names")
    accepts_pet = ("lora",)  # the scenario places the increments on the attention output projections
    requires_pet = True
    task_conditioned = True

    @dataclass
    class Options:
        slots: int = option(4, "key sets and LoRA increments per experience", ge=1)
        groups: int = option(6, "query groups of the grouped keys", ge=1)
        top_k: int = option(4, "increments mixed per sample", ge=1)
        retrieval: str = option("sample", "retrieve per sample, or once per batch (official; leaks the task on "
                                          "single-task batches)", choices=RETRIEVALS)
        train_slots: str = option("current", "while training retrieve from the current experience's slots, or from "
                                             "all (old ones frozen; SLM-BERT)", choices=TRAIN_SLOTS)
        key_epochs: int = option(3, "epochs of key fitting per experience", ge=0)
        key_lr: float = option(5e-4, "learning rate of key fitting", gt=0.0)
        key_dropout: float = option(0.25, "key dropout of the key loss", ge=0.0, lt=1.0)

    def setup(self):
        d, groups = self.model.backbone.num_features, self.options.groups
        if d % groups:  # said before the first experience trains, with the values that fit this backbone
            fits = [g for g in range(1, min(d, 16) + 1) if d % g == 0]
            raise ClpeftError(f"jare splits the {d}-dimensional query into options.groups={groups} equal groups, which "
                              f"does not divide; use a divisor of {d}, e.g. --option groups={max(fits)}")
        self.keys: list[torch.Tensor] = []  # per experience [G, slots, d/G], frozen once fitted
        self.slot_names: list[list[str]] = []

    # ------------------------------------------------------------------ queries and retrieval
    @torch.no_grad()
    def query(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's features with no increment: the retrieval query."""
        with self.eval_mode(), self.pet.using(None), self.autocast():
            return self.model.features(x).float()

    def _bank(self, experiences: list[int]) -> tuple[list[str], torch.Tensor]:
        return ([n for e in experiences for n in self.slot_names[e]],
                torch.cat([self.keys[e] for e in experiences], dim=1))

    def _mixed(self, x: torch.Tensor, experiences: list[int]):
        """Features and logits under each sample's retrieved mixture, and each sample's top-1 experience."""
        names, keys = self._bank(experiences)
        index, weights = retrieve(self.query(x), keys.to(x.device), self.options.top_k, self.options.retrieval == "sample")
        with self.pet.mixing(names, weights, index=index), self.autocast():
            features = self.model.features(x)
            logits = self.model.head(features)
        owner = torch.tensor([e for e in experiences for _ in self.slot_names[e]], device=x.device)
        return features, logits, owner[index[:, 0]]

    # ------------------------------------------------------------------ training
    def trainable_parameters(self):
        current = self.slot_names[-1] if self.slot_names else []
        return [p for name in current for p in self.pet.parameters(name)] + list(self.model.head.parameters())

    def _freeze(self, names: list[str]) -> None:
        for name in names:
            self.freeze(self.pet.parameters(name))

    def before_experience(self):
        t = len(self.keys)
        o = self.options
        queries = self.extract_features(self.experience_data, features=self.query)[0].cpu()
        generator = self.generator(t)
        self.keys.append(fit_keys(queries, o.slots, o.groups, generator, o.key_epochs, o.key_lr, dropout=o.key_dropout))
        names = [f"e{t}s{p}" for p in range(o.slots)]
        for name in names:
            self.add_pet_instance(name)  # slots are named per experience
        self.slot_names.append(names)
        self.pet.activate(None)

    def training_logits(self, x):
        t = len(self.keys) - 1
        experiences = list(range(t + 1)) if self.options.train_slots == "joint" else [t]
        return self._mixed(x, experiences)[1]

    def after_experience(self):
        self._freeze(self.slot_names[-1])  # old slots never change again

    # ------------------------------------------------------------------ evaluation
    def predict(self, x: torch.Tensor) -> Prediction:
        if not self.keys:
            return super().predict(x)
        features, logits, task = self._mixed(x, list(range(len(self.keys))))
        return Prediction(logits=logits, features=features, task=task)

    def predict_given_task(self, x: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """Oracle retrieval: each sample mixes only its own experience's slots (the upper bound)."""
        logits = None
        for t in task_ids.unique().tolist():
            rows = task_ids == t
            _, lt, _ = self._mixed(x[rows], [t])
            logits = lt.new_empty(x.shape[0], lt.shape[1]) if logits is None else logits
            logits[rows] = lt
        return logits

    # ------------------------------------------------------------------ records and resume
    def summary(self) -> dict:
        per_slot = self.pet.num_parameters(self.slot_names[0][0]) if self.slot_names else 0
        key_numel = self.keys[0].numel() if self.keys else 0
        o = self.options
        return {"retrieval": o.retrieval, "train_slots": o.train_slots, "slots_per_experience": o.slots,
                "groups": o.groups, "top_k": o.top_k, "bank_slots": sum(map(len, self.slot_names)),
                "parameters_per_slot": per_slot, "key_values_per_experience": key_numel,
                "bytes_per_experience": 4 * (per_slot * o.slots + key_numel)}

    def after_resume(self, train_stream) -> None:
        for names in self.slot_names:  # finished experiences' slots never train again
            self._freeze(names)
