"""Model families PET placement knows by structure (timm ViT, timm EfficientNet-style CNN, HF BERT)."""
from __future__ import annotations

from torch import nn

from clpeft.errors import ClpeftError


def unwrap(module: nn.Module) -> nn.Module:
    """The stock module inside any PET wrappers."""
    from clpeft.pet.layers import PETLayer

    while isinstance(module, PETLayer):
        module = module.base
    return module


def family(model: nn.Module) -> str:
    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks) and hasattr(unwrap(getattr(blocks[0], "attn", nn.Identity())), "qkv"):
        return "vit"
    if hasattr(model, "conv_stem") and blocks is not None:
        return "cnn"
    if hasattr(getattr(model, "encoder", None), "layer"):
        return "bert"
    return "unknown"


def block_list(model: nn.Module, fam: str) -> list[tuple[str, nn.Module]]:
    if fam == "vit":
        return [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
    if fam == "cnn":  # EfficientNet-style stages of blocks, flattened
        return [(f"blocks.{s}.{j}", b) for s, stage in enumerate(model.blocks) for j, b in enumerate(stage)]
    if fam == "bert":
        return [(f"encoder.layer.{i}", b) for i, b in enumerate(model.encoder.layer)]
    return []


def selected_blocks(model, fam, blocks) -> list[tuple[str, nn.Module]]:
    all_blocks = block_list(model, fam)
    if blocks is None:
        return all_blocks
    bad = [b for b in blocks if not 0 <= b < len(all_blocks)]
    if bad:
        raise ClpeftError(f"block {bad[0]} does not exist; this model has blocks 0..{len(all_blocks) - 1}")
    return [all_blocks[b] for b in blocks]


def io_features(module: nn.Module) -> tuple[int, int]:
    """(input, output) width of a module: its own, or its first and last Linear/Conv2d's."""
    from clpeft.pet.layers import PETLayer

    module = unwrap(module)
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, PETLayer)]
    if not layers:
        raise ClpeftError(f"cannot tell the width of {type(module).__name__}; target a module containing Linear/Conv2d layers")
    first, last = layers[0], layers[-1]
    d_in = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    d_out = last.out_features if isinstance(last, nn.Linear) else last.out_channels
    return d_in, d_out


KNOWN = "a timm ViT, a timm EfficientNet-style CNN or a Hugging Face BERT"


def per_block(model: nn.Module, fam: str, blocks, table: dict, kind: str, needs: str = KNOWN) -> list[str]:
    """Module names from a placement table ``{family: [path inside a block, ...]}`` over the chosen blocks."""
    if fam not in table:
        raise ClpeftError(f"{kind} needs {needs} to place itself; this model is {'not recognised' if fam == 'unknown' else 'a ' + fam}: "
                          "give `targets:` patterns")
    return [".".join(p for p in (prefix, rel) if p) for prefix, _ in selected_blocks(model, fam, blocks) for rel in table[fam]]
