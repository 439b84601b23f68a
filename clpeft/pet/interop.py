"""peft interoperability: a peft ``LoraConfig`` as clpeft's LoRA, and LoRA instances exported as peft adapters.

Import: ``inject_pet(model, peft.LoraConfig(...))`` translates rank, alpha (also rsLoRA's α/√r) and
``target_modules`` (names, matched as peft matches them: the whole name or its last components); what
clpeft's LoRA does not do — dropout, DoRA, biases, other initialisations, per-layer patterns, modules to
save — is refused with the field named, never silently dropped.

Export: :func:`save_peft_adapter` writes ``adapter_config.json`` and ``adapter_model.safetensors`` with peft's
key names, loadable by ``peft.PeftModel.from_pretrained(base_model, directory)``. clpeft's per-slice pairs
(LAE's separate K and V updates of a fused qkv layer) and learnable scales become one peft LoRA per layer of
rank r·slices whose B holds each slice's rows and scale, with ``lora_alpha = r`` (peft scale 1): the same ΔW.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from clpeft.errors import ClpeftError


def from_foreign_config(config):
    """clpeft's PET config for another library's config object (peft's ``LoraConfig``)."""
    kind = type(config).__name__
    if kind != "LoraConfig" or not type(config).__module__.startswith("peft"):
        raise ClpeftError(f"inject_pet needs a clpeft PET config (e.g. LoRAConfig) or a peft LoraConfig, got {kind}")
    return from_peft_lora(config)


def from_peft_lora(config):
    from clpeft.pet.lora import LoRAConfig

    unsupported = {
        "lora_dropout": lambda v: v not in (0, 0.0, None), "bias": lambda v: v not in ("none", None),
        "use_dora": bool, "fan_in_fan_out": bool, "layers_to_transform": lambda v: v is not None,
        "layers_pattern": lambda v: v is not None, "rank_pattern": bool, "alpha_pattern": bool,
        "modules_to_save": bool, "exclude_modules": bool, "target_parameters": bool,
        "init_lora_weights": lambda v: v is not True, "megatron_config": bool, "loftq_config": bool,
        "layer_replication": bool, "runtime_config": lambda v: False, "lora_bias": bool, "trainable_token_indices": bool,
    }
    for name, refused in unsupported.items():
        value = getattr(config, name, None)
        if value is not None and refused(value):
            raise ClpeftError(f"peft LoraConfig.{name}={value!r} has no equivalent in clpeft's LoRA; leave it at its "
                              "default to translate the config")
    targets = config.target_modules
    if targets is None:
        raise ClpeftError("peft LoraConfig.target_modules is empty; name the modules (e.g. ['qkv'])")
    if isinstance(targets, str):
        raise ClpeftError("peft LoraConfig.target_modules as a regular expression cannot be translated; give a list "
                          "of module names")
    patterns = sorted({p for t in targets for p in (t, f"*.{t}")})
    alpha = config.lora_alpha * (math.sqrt(config.r) if getattr(config, "use_rslora", False) else 1.0)
    return LoRAConfig(rank=int(config.r), alpha=float(alpha), kv_only=False, targets=patterns, blocks=None)


def _folded(layer, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [R, in], B [out, R]) of one layer's instance with every slice's scale folded into B."""
    inst = layer.instances[name]
    out = layer.base.out_channels if layer.is_conv else layer.base.out_features
    A = torch.cat([a.detach() for a in inst.lora_A])
    B = torch.zeros(out, A.shape[0])
    r = layer.rank
    for i, ((start, end), b, s) in enumerate(zip(layer.slices, inst.lora_B, inst.scales)):
        B[start:end, i * r:(i + 1) * r] = s().detach().float() * b.detach().float()
    return A.float(), B


def save_peft_adapter(controller, directory: str | Path, name: str | None = None,
                      base_model_name_or_path: str | None = None) -> Path:
    """Write instance ``name`` (default: the active one) of a LoRA controller as a peft adapter directory."""
    from safetensors.torch import save_file

    from clpeft.utils.io import atomic_write, atomic_write_json

    if controller.config.kind != "lora":
        raise ClpeftError(f"only LoRA exports to a peft adapter, not {controller.config.kind}")
    name = name or controller.active or (controller.names[0] if controller.names else None)
    controller._check(name)
    tensors, ranks = {}, {}  # targets are named relative to the model the PET was injected into: peft's base
    for target, layer in controller.layers.items():
        A, B = _folded(layer, name)
        key = f"base_model.model.{target}"
        if layer.is_conv:
            A, B = A[:, :, None, None], B[:, :, None, None]
        tensors[f"{key}.lora_A.weight"] = A.contiguous()
        tensors[f"{key}.lora_B.weight"] = B.contiguous()
        ranks[target] = A.shape[0]
    rank = max(set(ranks.values()), key=list(ranks.values()).count)
    pattern = {f"^{t}$".replace(".", r"\."): r for t, r in ranks.items() if r != rank}
    config = {"peft_type": "LORA", "task_type": None, "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
              "target_modules": sorted(ranks), "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
              "inference_mode": True, "modules_to_save": None, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
              "use_rslora": False, "use_dora": False, "base_model_name_or_path": base_model_name_or_path,
              "revision": None}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "adapter_model.safetensors",
                 lambda p: save_file(tensors, str(p), metadata={"format": "pt", "exported_by": "clpeft"}))
    atomic_write_json(directory / "adapter_config.json", config)
    return directory


def read_peft_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "adapter_config.json").read_text())
