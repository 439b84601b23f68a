"""Prompt tuning: learned tokens inserted into a ViT attention layer's input and removed after it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from clpeft.catalog import PET_KINDS as CATALOG_PET_KINDS
from clpeft.pet.config import PETConfig, PETKind, register_pet
from clpeft.pet.families import io_features, per_block
from clpeft.pet.layers import PETLayer, TokenSet, mixed_tokens
from clpeft.utils.typed import option


@dataclass
class PromptConfig(PETConfig):
    """``length`` learned tokens inserted into each chosen attention layer's input after the
    class token, removed again after the projection. Init U(0, 0.01); ``scale`` fixed 1.0 by default
    (LAE), None = learnable."""

    length: int = option(5, "prompt tokens per attention layer", ge=1)
    scale: float | None = option(1.0, "fixed token scale; null: learnable scalar")


class PromptAttentionLayer(PETLayer):
    """Learned tokens inserted into an attention module's input after the first ``position``
    tokens (the class token) and removed from its output, so the residual stream keeps N tokens."""

    token_layer = True

    def __init__(self, base, routing, length: int, dim: int, scale, position: int = 1):
        super().__init__(base, routing)
        self.length, self.dim, self.scale_value, self.position = length, dim, scale, position

    def new_instance(self):
        return TokenSet(self.length, self.dim, self.scale_value)

    def forward(self, x, *args, **kwargs):
        how = self.route()
        if how is None:
            return self.base(x, *args, **kwargs)
        p = self.position
        tokens = mixed_tokens(how, x.shape[0], lambda m: m()).to(x.dtype).expand(x.shape[0], -1, -1)
        out = self.base(torch.cat([x[:, :p], tokens, x[:, p:]], dim=1), *args, **kwargs)
        return torch.cat([out[:, :p], out[:, p + tokens.shape[1]:]], dim=1)


def targets(model, fam: str, config: PromptConfig) -> list[str]:
    return per_block(model, fam, config.blocks, {"vit": ["attn"]}, "prompt", "a timm ViT (attention with fused qkv)")


def build(model, name: str, module, config: PromptConfig, routing, fam: str) -> PromptAttentionLayer:
    return PromptAttentionLayer(module, routing, config.length, io_features(module)[0], config.scale,
                                position=int(getattr(model, "num_prefix_tokens", 1)))


KIND = register_pet(PETKind("prompt", PromptConfig, targets, build, CATALOG_PET_KINDS["prompt"]))
