"""Injection by target name into unmodified models, and the controller that owns the named instances.

Which modules a kind wraps and how comes from its registry entry (:mod:`clpeft.pet.config`); this module
never tests a kind's name.
"""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from clpeft.errors import ClpeftError
from clpeft.pet.config import PETConfig, get_pet_kind, pet_config
from clpeft.pet.families import family, unwrap
from clpeft.pet.layers import PETLayer, Routing


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
def default_targets(model: nn.Module, config: PETConfig) -> list[str]:
    """Module names (relative to ``model``) the config's kind attaches to by default."""
    return get_pet_kind(config.kind).targets(model, family(model), config)


def base_parameter_ids(model: nn.Module) -> set[int]:
    pet_ids = {id(p) for m in model.modules() if isinstance(m, PETLayer) for p in m.instances.parameters()}
    return {id(p) for p in model.parameters() if id(p) not in pet_ids}


def inject_pet(model: nn.Module, config: PETConfig, name: str = "default", freeze_base: bool = True) -> "PETController":
    """Wrap the target modules of ``model`` in place and add one instance called ``name`` (active).

    ``freeze_base``: every parameter that is not a PET parameter gets ``requires_grad=False``.
    """
    if not isinstance(config, PETConfig):
        from clpeft.pet.interop import from_foreign_config

        config = from_foreign_config(config)
    kind = get_pet_kind(config.kind)
    targets = match_targets(model, config.targets) if config.targets else default_targets(model, config)
    fam = family(model)
    routing = Routing()
    layers = {}
    for target in targets:
        parent, attr, module = resolve_module(model, target)
        layer = kind.build(model, target, module, config, routing, fam)
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


@contextmanager
def pets_off(model: nn.Module):
    """Every PET in ``model`` (all controllers) switched off for the block: the frozen model, exactly."""
    routings = {id(m.routing): m.routing for m in model.modules() if isinstance(m, PETLayer)}.values()
    saved = [(r, r.active, r.mix_names, r.mix_weights, r.mix_index, r.mix_mode) for r in routings]
    for r in routings:
        r.active, r.mix_names, r.mix_weights, r.mix_index = None, None, None, None
    try:
        yield
    finally:
        for r, active, names, weights, index, mode in saved:
            r.active, r.mix_names, r.mix_weights, r.mix_index, r.mix_mode = active, names, weights, index, mode


def inject_named_pet(model: nn.Module, kind: str, settings: dict | None = None, name: str = "default") -> "PETController":
    """``inject_pet`` with the kind named and its settings as a mapping (checked)."""
    return inject_pet(model, pet_config(kind, settings), name=name)


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

    @torch.no_grad()
    def average_into(self, target: str, names: list[str], momentum: float) -> None:
        """θ_target ← momentum·θ_target + (1 − momentum)·mean(θ_names), parameter by parameter (MOS pulls its adapter
        toward the mean of its snapshots; HiDe-Prompt its prompt toward the earlier ones)."""
        if not names:
            raise ClpeftError("average_into needs at least one instance to average")
        if not 0.0 <= momentum <= 1.0:
            raise ClpeftError(f"average_into momentum must be in [0, 1], got {momentum}")
        for n in [target, *names]:
            self._check(n)
        sources = [self.named_parameters(n) for n in names]
        for key, p in self.named_parameters(target).items():
            mean = torch.stack([src[key].detach() for src in sources]).mean(0)
            p.mul_(momentum).add_(mean, alpha=1.0 - momentum)

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
        with self._routed(list(names), weights, index, "sum"):
            yield self

    @contextmanager
    def concatenating(self, names: list[str], index: torch.Tensor):
        """Token PETs (prefix, prompt): sample ``b`` runs with the tokens of ``names[index[b, 0]]``, …,
        ``names[index[b, k-1]]`` side by side (k·L tokens per layer), as L2P's top-k prompts."""
        for n in names:
            self._check(n)
        if index.dim() != 2:
            raise ClpeftError(f"concatenation index must be [batch, k], got {tuple(index.shape)}")
        with self._routed(list(names), None, index, "concat"):
            yield self

    @contextmanager
    def _routed(self, names, weights, index, mode):
        r = self.routing
        previous = (r.mix_names, r.mix_weights, r.mix_index, r.mix_mode)
        r.mix_names, r.mix_weights, r.mix_index, r.mix_mode = names, weights, index, mode
        try:
            yield self
        finally:
            r.mix_names, r.mix_weights, r.mix_index, r.mix_mode = previous

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

    def save_peft(self, directory: str | Path, name: str | None = None, base_model_name_or_path: str | None = None) -> Path:
        """Export a LoRA instance as a peft adapter directory (``peft.PeftModel.from_pretrained`` loads it)."""
        from clpeft.pet.interop import save_peft_adapter

        return save_peft_adapter(self, directory, name, base_model_name_or_path)

    # ------------------------------------------------------------------ LoRA merging
    def merge(self, name: str | None = None) -> None:
        """Fold instance ``name`` into the base weights (kinds whose layers can: LoRA)."""
        name = name or self.active
        self._check(name)
        if not all(hasattr(layer, "merge") for layer in self.layers.values()):
            raise ClpeftError(f"only LoRA can be merged, not {self.config.kind}")
        for layer in self.layers.values():
            layer.merge(name)

    def fold(self, names: list[str], weights) -> None:
        """Fold instances ``names`` into the weights they adapt, each times its weight (a bank summed as
        Σ_k w_k·instance_k keeps its output), and remove them (kinds whose layers can: LoRA)."""
        for n in names:
            self._check(n)
        weights = [float(w) for w in weights]
        if len(weights) != len(names):
            raise ClpeftError(f"fold needs one weight per instance: {len(names)} names, {len(weights)} weights")
        if not all(hasattr(layer, "fold") for layer in self.layers.values()):
            raise ClpeftError(f"only LoRA instances can be folded into the weights, not {self.config.kind}")
        for layer in self.layers.values():
            layer.fold(names, weights)
        self.names = [n for n in self.names if n not in names]
        if self.routing.active in names:
            self.routing.active = None

    def unmerge(self) -> None:
        for layer in self.layers.values():
            if hasattr(layer, "unmerge"):
                layer.unmerge()
