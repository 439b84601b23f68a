"""Injection by target name into unmodified models, and the controller that owns the named instances."""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.pet.config import (PET_TYPES, AdapterConfig, LoRAConfig, PETConfig, PrefixConfig, PromptConfig,
                               SupermaskConfig)
from clpeft.pet.layers import (AdapterLayer, LoRALayer, PETLayer, PrefixAttentionLayer, PromptAttentionLayer,
                               Routing, SupermaskLayer, TaskNormLayer)


# ------------------------------------------------------------------------------ model families
def unwrap(module: nn.Module) -> nn.Module:
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


def default_targets(model: nn.Module, config: PETConfig) -> list[str]:
    """Module names (relative to ``model``) the config's kind attaches to, for a known family."""
    fam = family(model)
    kind = config.kind
    if kind in ("prefix", "prompt") and fam != "vit":
        raise ClpeftError(f"{kind} needs a timm ViT (attention with fused qkv); this {fam} model supports adapter and lora")
    if fam == "unknown" and kind != "supermask":
        raise ClpeftError("model family not recognised (timm ViT, timm EfficientNet, HF BERT); give `targets:` patterns")
    names = []
    if kind == "supermask":
        scope = [("", model)] if config.blocks is None or fam == "unknown" else selected_blocks(model, fam, config.blocks)
        kinds = (nn.Linear, nn.Conv2d) + ((nn.modules.batchnorm._BatchNorm,) if config.task_norm else ())
        for prefix, module in scope:
            for n, m in module.named_modules():
                if isinstance(m, kinds) and not isinstance(m, PETLayer):
                    names.append(".".join(p for p in (prefix, n) if p))
        return names
    for prefix, block in selected_blocks(model, fam, config.blocks):
        if kind == "adapter":
            where = {"vit": {"attn": "attn", "mlp": "mlp"}, "bert": {"attn": "attention", "mlp": "output"},
                     "cnn": {"block": ""}}[fam]
            position = config.position or next(iter(where))
            if position not in where:
                raise ClpeftError(f"adapter position {position!r} is not available on {fam}; use one of {', '.join(where)}")
            names.append(prefix + ("." + where[position] if where[position] else ""))
        elif kind == "lora":
            if fam == "vit":
                names.append(f"{prefix}.attn.qkv")
            elif fam == "bert":
                wanted = ("key", "value") if config.kv_only else ("query", "key", "value")
                names += [f"{prefix}.attention.self.{w}" for w in wanted]
            else:
                names += [f"{prefix}.{n}" for n, m in unwrap(block).named_modules()
                          if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
        else:  # prefix / prompt on ViT attention
            names.append(f"{prefix}.attn")
    return names


def resolve_module(model: nn.Module, name: str) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, module) for a dotted name, looking through PET wrappers."""
    parent, module = None, model
    parts = name.split(".") if name else []
    for part in parts:
        parent = unwrap(module)
        module = getattr(parent, part)
    return parent, parts[-1] if parts else "", module


def match_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    names = [n for n, m in model.named_modules() if n and not isinstance(m, PETLayer)
             and ".instances." not in n and not n.endswith(".instances")]
    clean = sorted({n.replace(".base.", ".").removesuffix(".base") for n in names},
                   key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
    hits = [n for n in clean if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not hits:
        raise ClpeftError(f"no module matches targets {patterns}; see model.named_modules() for names")
    return hits


# ------------------------------------------------------------------------------------ building
def build_layer(model: nn.Module, name: str, module: nn.Module, config: PETConfig, routing: Routing) -> PETLayer:
    inner = unwrap(module)
    if isinstance(config, AdapterConfig):
        d_in, d_out = io_features(inner)
        mode = config.mode or ("sequential" if family(model) == "cnn" else "parallel")
        if mode not in ("parallel", "sequential"):
            raise ClpeftError(f"adapter mode {mode!r} is unknown; use parallel or sequential")
        if mode == "parallel" and family(model) == "cnn" and d_in != d_out:
            raise ClpeftError(f"{name} changes width {d_in}→{d_out}; a parallel adapter cannot sit beside it, use mode: sequential")
        return AdapterLayer(module, routing, d_in, d_out, config.bottleneck, config.scale, mode)
    if isinstance(config, LoRAConfig):
        if not isinstance(inner, (nn.Linear, nn.Conv2d)):
            raise ClpeftError(f"LoRA targets Linear or 1x1 Conv2d layers; {name} is {type(inner).__name__}")
        out = inner.out_features if isinstance(inner, nn.Linear) else inner.out_channels
        if config.kv_only and name.endswith("qkv"):
            d = out // 3
            slices = [(d, 2 * d), (2 * d, 3 * d)]
        else:
            slices = [(0, out)]
        return LoRALayer(module, routing, slices, config.rank, config.alpha)
    if isinstance(config, PrefixConfig):
        return PrefixAttentionLayer(module, routing, config.length, config.compensatory)
    if isinstance(config, PromptConfig):
        dim = io_features(inner)[0]
        return PromptAttentionLayer(module, routing, config.length, dim, config.scale,
                                    position=int(getattr(model, "num_prefix_tokens", 1)))
    if isinstance(config, SupermaskConfig):
        if isinstance(inner, nn.modules.batchnorm._BatchNorm):
            return TaskNormLayer(module, routing)
        return SupermaskLayer(module, routing, config.sparsity_kept, config.signed_constant)
    raise ClpeftError(f"unknown PET config {type(config).__name__}")


def base_parameter_ids(model: nn.Module) -> set[int]:
    pet_ids = {id(p) for m in model.modules() if isinstance(m, PETLayer) for p in m.instances.parameters()}
    return {id(p) for p in model.parameters() if id(p) not in pet_ids}


def inject_pet(model: nn.Module, config: PETConfig, name: str = "default", freeze_base: bool = True) -> "PETController":
    """Wrap the target modules of ``model`` in place and add one instance called ``name`` (active).

    ``freeze_base``: every parameter that is not a PET parameter gets ``requires_grad=False``.
    """
    targets = match_targets(model, config.targets) if config.targets else default_targets(model, config)
    routing = Routing()
    layers = {}
    for target in targets:
        parent, attr, module = resolve_module(model, target)
        layer = build_layer(model, target, module, config, routing)
        setattr(parent, attr, layer)
        layers[target] = layer
    controller = PETController(model, config, layers, routing)
    controller.add(name)
    controller.activate(name)
    if freeze_base:
        base = base_parameter_ids(model)
        for p in model.parameters():
            if id(p) in base:
                p.requires_grad_(False)
    return controller


def inject_named_pet(model: nn.Module, kind: str, settings: dict | None = None, name: str = "default") -> "PETController":
    if kind not in PET_TYPES:
        raise ClpeftError(f"unknown PET module {kind!r}; choose one of {', '.join(sorted(PET_TYPES))}")
    settings = dict(settings or {})
    for key in ("blocks",):
        if isinstance(settings.get(key), list):
            settings[key] = tuple(settings[key])
    return inject_pet(model, PET_TYPES[kind].from_dict(settings), name=name)


class PETController:
    """The named instances of one PET kind across all its layers, and the switch between them.

    ``activate(name)`` picks the instance every layer uses (``None``: the frozen model exactly);
    ``using(name)`` does so for a block of code; ``mixing(names, weights)`` is bank mode: sample
    ``b`` runs with ``Σ_k weights[b, k] · instance_k`` in one batched forward.
    """

    def __init__(self, model: nn.Module, config: PETConfig, layers: dict[str, PETLayer], routing: Routing):
        self.model, self.config, self.layers, self.routing = model, config, layers, routing
        self.names: list[str] = []

    # ------------------------------------------------------------------ instances and switching
    def add(self, name: str, copy_from: str | None = None) -> None:
        if name in self.names:
            raise ClpeftError(f"PET instance {name!r} exists already")
        for layer in self.layers.values():
            layer.add_instance(name)
        self.names.append(name)
        if copy_from is not None:
            self.load_state_dict(self.state_dict(copy_from), name)

    def remove(self, name: str) -> None:
        self._check(name)
        for layer in self.layers.values():
            del layer.instances[name]
        self.names.remove(name)
        if self.routing.active == name:
            self.routing.active = None

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise ClpeftError(f"no PET instance {name!r}; instances are {self.names}")

    @property
    def active(self) -> str | None:
        return self.routing.active

    def activate(self, name: str | None) -> None:
        if name is not None:
            self._check(name)
        self.routing.active = name

    @contextmanager
    def using(self, name: str | None):
        previous = self.routing.active
        self.activate(name)
        try:
            yield self
        finally:
            self.routing.active = previous

    @contextmanager
    def mixing(self, names: list[str], weights: torch.Tensor, index: torch.Tensor | None = None):
        """Bank mode: sample ``b`` runs with ``Σ_k weights[b, k] · instance``, the instances being ``names``
        (weights ``[batch, len(names)]``) or, with ``index`` ``[batch, k]``, ``names[index[b, j]]``
        (weights ``[batch, k]``): a sparse top-k mixture that LoRA computes at a cost independent of the bank."""
        for n in names:
            self._check(n)
        if index is None and (weights.dim() != 2 or weights.shape[1] != len(names)):
            raise ClpeftError(f"mixture weights must be [batch, {len(names)}], got {tuple(weights.shape)}")
        if index is not None and (weights.shape != index.shape or weights.dim() != 2):
            raise ClpeftError(f"sparse mixture: weights {tuple(weights.shape)} and index {tuple(index.shape)} must both be [batch, k]")
        previous = (self.routing.mix_names, self.routing.mix_weights, self.routing.mix_index)
        self.routing.mix_names, self.routing.mix_weights, self.routing.mix_index = list(names), weights, index
        try:
            yield self
        finally:
            self.routing.mix_names, self.routing.mix_weights, self.routing.mix_index = previous

    # ------------------------------------------------------------------ parameters and state
    def named_parameters(self, name: str | None = None) -> dict[str, nn.Parameter]:
        """Parameters of instance ``name`` (default: the active one, or the only one)."""
        name = name or self.active or (self.names[0] if len(self.names) == 1 else None)
        self._check(name)
        out = {}
        for target, layer in self.layers.items():
            for pname, p in layer.instances[name].named_parameters():
                out[f"{target}.{pname}"] = p
        return out

    def parameters(self, name: str | None = None) -> list[nn.Parameter]:
        return list(self.named_parameters(name).values())

    def num_parameters(self, name: str | None = None) -> int:
        return sum(p.numel() for p in self.parameters(name))

    def state_dict(self, name: str | None = None) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.named_parameters(name).items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], name: str | None = None) -> None:
        own = self.named_parameters(name)
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ClpeftError(f"PET state does not fit ({len(missing)} missing e.g. {missing[:1]}, "
                              f"{len(unexpected)} unexpected e.g. {unexpected[:1]}); save and load with the same config")
        for key, p in own.items():
            if p.shape != state[key].shape:
                raise ClpeftError(f"PET state {key} has shape {tuple(state[key].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[key].to(p.device, p.dtype))

    def save(self, path: str | Path, name: str | None = None) -> Path:
        from safetensors.torch import save_file

        from clpeft.utils.io import atomic_write

        state = {k: v.contiguous().cpu() for k, v in self.state_dict(name).items()}
        return atomic_write(path, lambda p: save_file(state, str(p), metadata={"kind": self.config.kind}))

    def load(self, path: str | Path, name: str | None = None) -> None:
        from safetensors.torch import load_file

        path = Path(path)
        if not path.exists():
            raise ClpeftError(f"PET state file {path} does not exist")
        self.load_state_dict(load_file(str(path)), name)

    # ------------------------------------------------------------------ LoRA merging
    def merge(self, name: str | None = None) -> None:
        name = name or self.active
        self._check(name)
        if not isinstance(self.config, LoRAConfig):
            raise ClpeftError(f"only LoRA can be merged, not {self.config.kind}")
        for layer in self.layers.values():
            layer.merge(name)

    def unmerge(self) -> None:
        for layer in self.layers.values():
            if isinstance(layer, LoRALayer):
                layer.unmerge()
