"""Registering clpeft's own small networks in timm's registry, so ``timm.create_model`` builds them."""
from __future__ import annotations


def scratch_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    """The constructor kwargs of a network with no pretrained weights (timm's hub keys dropped)."""
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; it is trained (or masked) from scratch")
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
