"""PET kinds as data: each kind is a config dataclass, a layer and a placement table, registered by name.

A kind lives in its own module (``adapter``, ``lora``, ``prefix``, ``prompt``, ``supermask``) like a peft
tuner; injection (:mod:`clpeft.pet.inject`) looks kinds up here and never tests a kind's name. Where a
kind goes: ``blocks`` picks blocks of a known family (timm ViT, timm EfficientNet, HF BERT) and the kind's
table picks the module inside each block; ``targets`` instead names modules by glob patterns over
``model.named_modules()``, like peft's ``target_modules``. Defaults follow LAE's ViT settings (blocks 0-4).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from clpeft.errors import ClpeftError
from clpeft.utils.typed import Settings, dataclass_from_dict, option

LAE_BLOCKS = (0, 1, 2, 3, 4)


@dataclass
class PETConfig(Settings):
    blocks: tuple[int, ...] | None = option(LAE_BLOCKS, "blocks that get the PET (null: every block)")
    targets: list[str] | None = option(None, "glob patterns over module names, instead of blocks")

    kind = "pet"

    @property
    def section(self) -> str:
        return f"pets.{self.kind}"

    @classmethod
    def from_dict(cls, values: dict | None, prefix: str | None = None) -> "PETConfig":
        return dataclass_from_dict(cls, values or {}, f"{cls.kind} setting", prefix or f"pet_settings ({cls.kind})")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PETKind:
    """A registered PET kind: ``config`` (dataclass), ``targets(model, family, config)`` → default module names
    for a known family, ``build(model, name, module, config, routing, family)`` → the wrapping layer."""

    name: str
    config: type
    targets: Callable
    build: Callable
    description: str = ""


PET_KINDS: dict[str, PETKind] = {}
PET_TYPES: dict[str, type] = {}  # name → config class (what a scenario's ``pets:`` section is checked against)


def register_pet(kind: PETKind) -> PETKind:
    if kind.name in PET_KINDS and PET_KINDS[kind.name] is not kind:
        raise ValueError(f"PET kind {kind.name!r} is registered twice")
    kind.config.kind = kind.name
    PET_KINDS[kind.name] = kind
    PET_TYPES[kind.name] = kind.config
    return kind


def get_pet_kind(name: str) -> PETKind:
    import clpeft.pet  # noqa: F401 - registers the built-in kinds

    if name not in PET_KINDS:
        raise ClpeftError(f"unknown PET module {name!r}; choose one of {', '.join(sorted(PET_KINDS))} (see `clpeft list`)")
    return PET_KINDS[name]


def pet_config(name: str, settings: dict | None = None) -> PETConfig:
    """The typed, checked config of kind ``name`` from a scenario's settings mapping."""
    return get_pet_kind(name).config.from_dict(settings or {})
