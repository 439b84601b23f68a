"""Task-identity inference: predict which experience a test sample belongs to, then run the routed forward.

Methods that keep one PET instance (prompt, adapter, LoRA) per experience and need a task id at test time share
this router (HiDe-Prompt's "task-identity inference"; any method that infers a task can use it). It reads the
frozen backbone's features — so its inputs never drift — through a residual MLP
(``x + W₂·drop(GELU(W₁x))``, LayerNorm; hidden width ``ratio``·D) and a linear head over every class; a class's
experience (``class_task``) turns the predicted class into the routed experience. Linear layers are drawn as timm
draws a ViT's (truncated normal, std 0.02, zero bias).

The router trains like a head: cross-entropy over the current experience's classes (in a strategy's own phase),
then — from the second experience on — re-aligned on features sampled from every seen class
(:func:`~clpeft.models.head_alignment.align_head`). The accuracy of its routing is what evaluation reports as
task inference (``Prediction.task``).
"""
from __future__ import annotations

import torch
from torch import nn


class TaskRouter(nn.Module):
    def __init__(self, dim: int, num_classes: int, ratio: int = 2, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim * ratio), nn.Linear(dim * ratio, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for layer in (self.fc1, self.fc2, self.head):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        self.register_buffer("class_task", torch.full((num_classes,), -1, dtype=torch.long))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits over every class from frozen features ``[B, D]``."""
        h = self.drop(self.fc2(self.drop(nn.functional.gelu(self.fc1(features)))))
        return self.head(self.norm(features + h))

    def learn_classes(self, classes: range, experience: int) -> None:
        self.class_task[classes.start:classes.stop] = experience

    def experience_of(self, logits: torch.Tensor, seen: int) -> torch.Tensor:
        """[B]: the experience of each sample's most likely class among the ``seen`` ones, from the router's logits."""
        return self.class_task[logits[:, :seen].argmax(1)]

    @torch.no_grad()
    def route(self, features: torch.Tensor, seen: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(experience [B], class [B]) of ``features``."""
        logits = self(features)
        return self.experience_of(logits, seen), logits[:, :seen].argmax(1)
