"""Compute once what every PET instance shares: the backbone up to the first PET-carrying block.

Ensembles over PET instances (LAE's online and offline experts) differ only from the first block
that holds a PET layer on; ``SharedTrunk`` runs the stock modules before it once and the rest once
per instance. On a timm ViT the split follows ``forward_features``/``forward_head`` module by
module (no forked forward); on other families the trunk is empty and the branch is the whole
backbone, which is always correct, only not cheaper.
"""
from __future__ import annotations

import torch
from torch import nn

from clpeft.pet.families import family
from clpeft.pet.inject import PETController


class SharedTrunk:
    def __init__(self, backbone: nn.Module, controller: PETController):
        self.backbone = backbone
        self.first_block = None
        if family(backbone) == "vit":
            indices = [_block_index(name) for name in controller.layers]
            if indices and all(i is not None for i in indices):
                self.first_block = min(indices)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.first_block is None:
            return x
        net = self.backbone
        x = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))
        for block in net.blocks[: self.first_block]:
            x = block(x)
        return x

    def branch(self, h: torch.Tensor) -> torch.Tensor:
        """Features (what the head sees) from the trunk's output, with the PET routing in force."""
        if self.first_block is None:
            return self.backbone(h)
        net = self.backbone
        for block in net.blocks[self.first_block:]:
            h = block(h)
        return net.forward_head(net.norm(h), pre_logits=True)


def _block_index(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None
