"""LeNet-300-100, the MLP that SupSup and ExSSNeT use on MNIST-style streams (784-300-100, no biases).

Registered in timm's model registry as ``lenet_300_100`` so ``timm.create_model`` builds it like any
other model; with ``num_classes=0`` it returns the 100-d ReLU features of the second hidden layer.
"""
from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

from clpeft.models.registration import scratch_kwargs


class LeNet300100(nn.Module):
    def __init__(self, num_classes: int = 0, in_chans: int = 1, img_size: int = 28, bias: bool = False, **_):
        super().__init__()
        self.fc1 = nn.Linear(in_chans * img_size * img_size, 300, bias=bias)
        self.fc2 = nn.Linear(300, 100, bias=bias)
        self.num_features = 100
        self.head = nn.Linear(100, num_classes, bias=bias) if num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int, **_):
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def lenet_300_100(pretrained: bool = False, **kwargs) -> LeNet300100:
    return LeNet300100(**scratch_kwargs("lenet_300_100", pretrained, kwargs))
