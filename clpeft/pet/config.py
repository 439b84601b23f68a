"""PET configurations: what to inject and where. Defaults follow LAE's ViT settings (blocks 0-4).

Where: ``blocks`` picks blocks of a known family (timm ViT, timm EfficientNet, HF BERT) and the
family decides the module (attention, qkv, 1x1 convs, ...); ``targets`` instead names modules
by glob patterns over ``model.named_modules()``, like peft's ``target_modules``.
"""
from __future__ import annotations

from dataclasses import dataclass

from clpeft.utils.typed import dataclass_from_dict

LAE_BLOCKS = (0, 1, 2, 3, 4)


@dataclass
class PETConfig:
    blocks: tuple | list | None = LAE_BLOCKS
    targets: list | None = None

    kind = "pet"

    @classmethod
    def from_dict(cls, values: dict) -> "PETConfig":
        return dataclass_from_dict(cls, values, f"{cls.kind} setting")


@dataclass
class AdapterConfig(PETConfig):
    """Bottleneck adapter ``s·up(GELU(down(x)))``, up-projection zero-initialised.

    ``bottleneck``: hidden width h. ``position``: the sub-layer it runs beside — ``attn`` or
    ``mlp`` (ViT/BERT), ``block`` (CNN blocks); None = ``attn`` on transformers, ``block`` on CNNs.
    ``mode``: ``parallel`` (added to the wrapped module's output, fed its input) or ``sequential``
    (applied to its output, residually); None = parallel on transformers, sequential on CNNs.
    ``scale``: None = learnable scalar initialised to 1 (LAE), a float = fixed.
    """

    bottleneck: int = 5
    position: str | None = None
    mode: str | None = None
    scale: float | None = None
    kind = "adapter"


@dataclass
class LoRAConfig(PETConfig):
    """Low-rank update ``B·A`` (B zero-initialised) on Linear layers or 1x1 convolutions.

    ``kv_only``: on a fused qkv Linear, adapt only the K and V rows with one pair each (LAE);
    False adapts the whole fused output with one pair. ``alpha``: None = a learnable scale per
    pair initialised to 1 (LAE); a float = fixed scale ``alpha / rank`` (PEFT).
    """

    rank: int = 5
    alpha: float | None = None
    kv_only: bool = True
    kind = "lora"


@dataclass
class PrefixConfig(PETConfig):
    """``length`` learned key and value tokens per attention layer, init U(0, 0.01), with LAE's
    compensatory calibration (the original attention keeps weight ``1 − λ``). Learnable key/value
    scales initialised to 1."""

    length: int = 10
    compensatory: bool = True
    kind = "prefix"


@dataclass
class PromptConfig(PETConfig):
    """``length`` learned tokens inserted into each chosen attention layer's input after the
    class token, removed again after the projection. Init U(0, 0.01); ``scale`` fixed 1.0 by default
    (LAE), None = learnable."""

    length: int = 5
    scale: float | None = 1.0
    kind = "prompt"


@dataclass
class SupermaskConfig(PETConfig):
    """Edge-popup supermask per instance (task) over frozen weights of Linear/Conv2d layers.

    ``sparsity_kept``: fraction of each layer's weights kept (ExSSNeT's ``sparsity``, default 0.1).
    ``blocks``/``targets``: which layers; ``blocks=None`` with no targets masks every Linear and Conv2d.
    ``signed_constant``: re-initialise the masked weights to ±sqrt(2/fan_in) (ExSSNeT's init).
    ``task_norm``: BatchNorm layers in scope keep running statistics per instance (ExSSNeT's per-task BN).
    """

    sparsity_kept: float = 0.1
    signed_constant: bool = False
    task_norm: bool = True
    blocks: tuple | list | None = None
    kind = "supermask"


PET_TYPES: dict[str, type[PETConfig]] = {
    "adapter": AdapterConfig,
    "lora": LoRAConfig,
    "prefix": PrefixConfig,
    "prompt": PromptConfig,
    "supermask": SupermaskConfig,
}
