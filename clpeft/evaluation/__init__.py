"""Evaluation: the accuracy matrix, metrics computed from it, and cost measures."""
from clpeft.evaluation.metrics import (
    accuracy_after_each, average_incremental_accuracy, backward_transfer, final_accuracy,
    forgetting_after_learning, forgetting_max, forward_transfer, per_experience_forgetting, summarize,
)

__all__ = [
    "accuracy_after_each", "average_incremental_accuracy", "backward_transfer", "final_accuracy",
    "forgetting_after_learning", "forgetting_max", "forward_transfer", "per_experience_forgetting", "summarize",
]
