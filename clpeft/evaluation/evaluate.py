"""One evaluation pass over the whole test set, filling a row of the accuracy matrix.

Batches are mixed-class and shuffled by default (``ContinualStream.eval_batches``); predictions
are made by ``predict(x)`` (logits, or a :class:`~clpeft.strategies.base.Prediction` with extra
named views) and split per experience afterwards, so one pass gives the class-IL row, the task-IL
row (argmax restricted to the sample's own experience's classes) and a class-IL row per view.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from clpeft.streams.stream import ContinualStream


@dataclass
class EvalRow:
    accuracy: list[float]          # class-IL accuracy per test experience
    accuracy_task_il: list[float]  # task-IL accuracy per test experience (NaN where no head exists yet)
    counts: list[int]              # test samples per experience
    views: dict = field(default_factory=dict)  # view name → class-IL accuracy per test experience
    task_inference: list | None = None  # share of samples routed to their own experience (methods that infer it)


@torch.no_grad()
def evaluate_stream(predict: Callable[[torch.Tensor], object], stream: ContinualStream, num_seen: int,
                    device: torch.device, batch_size: int = 256, seed: int = 0, order: str | None = None,
                    predict_given_task: Callable | None = None, num_workers: int = 2, unseen: bool = True) -> EvalRow:
    """``num_seen``: classes the model has heads for; with none, nothing is predicted (accuracy 0).
    ``unseen=False``: test experiences whose classes all lie at or past ``num_seen`` are not run (their class-IL
    accuracy is 0 by construction, their task-IL NaN), so the cost follows the classes seen, not the stream.
    ``predict_given_task(x, task_ids)``: task-IL logits of a model conditioned on the true experience
    (e.g. its mask); without it the task-IL row restricts the class-IL logits."""
    T = stream.n_experiences
    if num_seen == 0:  # nothing can be predicted: count the test sets without loading them
        counts = [len(exp.dataset) for exp in stream.test_stream]
        return EvalRow(accuracy=[0.0] * T, accuracy_task_il=[float("nan")] * T, counts=counts)
    correct = np.zeros(T)
    correct_ti = np.zeros(T)
    counts = np.zeros(T, dtype=np.int64)
    starts = torch.tensor([a for a, _ in stream.class_ranges])
    ends = torch.tensor([b for _, b in stream.class_ranges])
    correct_views: dict[str, np.ndarray] = {}
    routed = None
    learned = sum(1 for _, end in stream.class_ranges if end <= num_seen)  # ranges are in order: the first `learned`
    skipped = set() if unseen else {j for j, (start, _) in enumerate(stream.class_ranges) if start >= num_seen}
    for j in skipped:  # counted without loading them
        counts[j] = len(stream.test_stream[j].dataset)
    run = [j for j in range(T) if j not in skipped] if skipped else None
    for x, y, e in stream.eval_batches(batch_size, seed, order, num_workers, experiences=run):
        counts += np.bincount(e.numpy(), minlength=T)
        x = x.to(device, non_blocking=True)
        if stream.batch_eval_transform is not None:  # uint8 images resized on the device
            x = stream.batch_eval_transform(x)
        out = predict(x)
        logits, views = (out, {}) if isinstance(out, torch.Tensor) else (out.logits, out.views)
        logits = logits.float().cpu()
        pred = logits[:, :num_seen].argmax(dim=1)
        np.add.at(correct, e.numpy(), (pred == y).numpy())
        for name, view in views.items():
            hits = (view.float().cpu()[:, :num_seen].argmax(dim=1) == y).numpy()
            np.add.at(correct_views.setdefault(name, np.zeros(T)), e.numpy(), hits)
        if getattr(out, "task", None) is not None:
            routed = np.zeros(T) if routed is None else routed
            np.add.at(routed, e.numpy(), (out.task.cpu() == e).numpy())
        # task-IL: mask every logit outside the sample's own experience's range
        if predict_given_task is not None:
            own = e.clamp_max(learned - 1)  # experiences without a head yet are scored NaN below
            logits = predict_given_task(x, own.to(device)).float().cpu()
        cols = torch.arange(logits.shape[1]).unsqueeze(0)
        inside = (cols >= starts[e].unsqueeze(1)) & (cols < ends[e].unsqueeze(1))
        pred_ti = logits.masked_fill(~inside, float("-inf")).argmax(dim=1)
        np.add.at(correct_ti, e.numpy(), (pred_ti == y).numpy())
    n = np.maximum(counts, 1)
    acc = (correct / n).tolist()
    def per_learned_experience(hits):  # NaN for experiences the model has no head for yet
        return [float(h / m) if j < learned else float("nan") for j, (h, m) in enumerate(zip(hits, n))]

    acc_ti = per_learned_experience(correct_ti)
    views = {name: (c / n).tolist() for name, c in correct_views.items()}
    task_inference = per_learned_experience(routed) if routed is not None else None
    return EvalRow(accuracy=acc, accuracy_task_il=acc_ti, counts=counts.tolist(), views=views,
                   task_inference=task_inference)
