"""Test-time adaptation methods, registered by name like PET kinds: a config and a wrapper of ``predict``.

A method wraps a strategy's ``predict(x) -> Prediction`` into another one that corrects each test batch
(LAME); ``variants(config)`` names extra settings worth evaluating on the same trained model at no
training cost (LAME's other affinities), reported side by side in ``final_accuracy_by_eval_order``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from clpeft.errors import ClpeftError


@dataclass(frozen=True)
class TTAMethod:
    name: str
    config: type                       # a dataclass with ``from_dict``
    wrap: Callable                     # (predict, num_seen: () -> int, config) -> predict
    variants: Callable = lambda config: []  # config -> [(label, config)]
    description: str = ""


TTA_METHODS: dict[str, TTAMethod] = {}


def register_tta(method: TTAMethod) -> TTAMethod:
    TTA_METHODS[method.name] = method
    return method


def get_tta(name: str) -> TTAMethod:
    import clpeft.evaluation.lame  # noqa: F401 - registers LAME

    if name not in TTA_METHODS:
        raise ClpeftError(f"unknown test-time adaptation {name!r}; choose one of {', '.join(sorted(TTA_METHODS))}")
    return TTA_METHODS[name]


def tta_predictors(name: str, settings: dict, predict, num_seen) -> list[tuple[str, Callable]]:
    """``predict`` wrapped by the method as configured (labelled ``name``), then by each variant."""
    method = get_tta(name)
    configured = method.config.from_dict(settings)
    labelled = [(name, configured)] + [(f"{name}[{label}]", cfg) for label, cfg in method.variants(configured)]
    return [(label, method.wrap(predict, num_seen, cfg)) for label, cfg in labelled]


def compare_eval_orders(evaluate, predictors: list[tuple[str, Callable]], orders, batch_size: int) -> list[dict]:
    """Final accuracy of each predictor on each test-batch order, same model and batches in a row: what
    test-time adaptation buys on i.i.d. and on non-i.i.d. batches. ``evaluate(predict, order)`` → EvalRow."""
    rows = []
    for order in orders:
        for label, fn in predictors:
            row = evaluate(fn, order)
            rows.append({"eval_order": order, "tta": label, "eval_batch_size": batch_size,
                         "final_accuracy": float(np.average(row.accuracy, weights=row.counts))})
    return rows
