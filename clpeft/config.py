"""Run configuration: a scenario YAML (named stream + default settings) resolved into one typed, hashed config.

Scenario file layout (every key optional except ``stream``)::

    name: digits_b0_inc2
    stream: {dataset: digits, n_experiences: 5, class_order_seed: 0}
    model: {backbone: vit_tiny_fmnist, pretrained: true}
    train: {epochs: 3, lr: 0.001, batch_size: 32}
    strategy: finetune            # default strategy when none is given
    strategies:                   # best settings per strategy: train/model overrides, options, pet
      linear_probe: {train: {lr: 0.01}}
      lae: {model: {head_init_std: 0.001}, pet: adapter}
      jare: {pet: lora, pet_settings: {targets: ["blocks.*.attn.proj"], rank: 8}}   # overrides pets.lora
      lwf: {options: {alpha: 1.0}}
    pets:                         # settings per PET module name
      adapter: {bottleneck: 5}
    tta:                          # settings per test-time adaptation method (used with --tta NAME)
      lame: {affinity: rbf, knn: 5}

Unknown keys are errors, not silently ignored.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from clpeft.errors import ClpeftError
from clpeft.utils.typed import dataclass_from_dict
from clpeft.streams.stream import StreamConfig
from clpeft.strategies.base import TrainSettings

SCENARIO_KEYS = {"name", "description", "stream", "model", "train", "strategy", "strategies", "pets", "seed", "amp", "loggers",
                 "tta"}
TTA_METHODS = ("lame",)
SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"


@dataclass
class ModelConfig:
    backbone: str = "vit_tiny_fmnist"
    pretrained: bool = True
    checkpoint: str | None = None
    head_init_std: float | None = None
    normalize: bool = True  # False: feed [0, 1] pixels (LAE's official code does)
    overrides: dict = field(default_factory=dict)


@dataclass
class RunConfig:
    name: str
    stream: StreamConfig
    model: ModelConfig
    strategy: str
    train: TrainSettings
    options: dict = field(default_factory=dict)
    pet: str | None = None
    pet_settings: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    amp: str = "off"
    loggers: list = field(default_factory=list)
    tta: str | None = None
    tta_settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that changes the numbers (not the device name string's formatting)."""
        payload = json.dumps(self.as_dict(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        parts = [self.name, self.strategy] + ([self.pet] if self.pet else []) + ([self.tta] if self.tta else []) \
            + [f"s{self.seed}", self.config_hash()]
        return "-".join(parts)


def _typed(cls, values: dict, where: str):
    return dataclass_from_dict(cls, values, f"key in {where}")


def find_scenario(path_or_name: str) -> Path:
    path = Path(path_or_name)
    if path.exists():
        return path
    named = SCENARIOS_DIR / f"{path_or_name}.yaml"
    if named.exists():
        return named
    available = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml")) if SCENARIOS_DIR.exists() else []
    raise ClpeftError(f"scenario {path_or_name!r} not found; give a YAML path or one of: {', '.join(available)}")


def load_scenario(path_or_name: str) -> dict:
    path = find_scenario(path_or_name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ClpeftError(f"{path} is not valid YAML{where}; fix the syntax") from exc
    if not isinstance(data, dict) or "stream" not in data:
        raise ClpeftError(f"{path} must be a mapping with at least a `stream:` section")
    unknown = sorted(set(data) - SCENARIO_KEYS)
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(sorted(SCENARIO_KEYS))}")
    data.setdefault("name", path.stem)
    return data


def resolve(scenario: dict, strategy: str | None = None, pet: str | None = None, seed: int | None = None,
            device: str = "cpu", amp: str | None = None, overrides: dict | None = None, tta: str | None = None) -> RunConfig:
    """Merge scenario defaults, the chosen strategy's best settings, and command-line values."""
    from clpeft.strategies.base import get_strategy

    strategy = strategy or scenario.get("strategy") or "finetune"
    get_strategy(strategy)  # unknown name → one-line error
    per_strategy = (scenario.get("strategies") or {}).get(strategy) or {}
    unknown = sorted(set(per_strategy) - {"train", "model", "options", "pet", "pet_settings"})
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} under strategies.{strategy}; use train, model, options, pet or pet_settings")
    train = {**(scenario.get("train") or {}), **(per_strategy.get("train") or {})}
    overrides = overrides or {}
    train.update(overrides.get("train", {}))
    stream_values = {**scenario["stream"], **overrides.get("stream", {})}
    seed = int(scenario.get("seed", 0) if seed is None else seed)
    if "class_order_seed" not in stream_values:
        stream_values["class_order_seed"] = seed
    pet = pet or per_strategy.get("pet")
    if pet == "none":  # explicitly no PET, even where the scenario gives the strategy one
        pet = None
    pet_settings = {}
    if pet:
        from clpeft.pet import PET_TYPES

        if pet not in PET_TYPES:
            raise ClpeftError(f"unknown PET module {pet!r}; choose one of {', '.join(sorted(PET_TYPES))} (see `clpeft list`)")
        pet_settings = dict((scenario.get("pets") or {}).get(pet) or {})
        if pet == per_strategy.get("pet"):  # the strategy's own PET placement (e.g. JARe's attention projections)
            pet_settings.update(per_strategy.get("pet_settings") or {})
    tta_settings = {}
    if tta:
        if tta not in TTA_METHODS:
            raise ClpeftError(f"unknown test-time adaptation {tta!r}; choose one of {', '.join(TTA_METHODS)}")
        from clpeft.evaluation.lame import LAMEConfig

        tta_settings = dict((scenario.get("tta") or {}).get(tta) or {})
        LAMEConfig.from_dict(tta_settings)  # bad settings fail here, before any training
    return RunConfig(
        name=str(scenario["name"]),
        stream=_typed(StreamConfig, stream_values, "stream"),
        model=_typed(ModelConfig, {**(scenario.get("model") or {}), **(per_strategy.get("model") or {}),
                                   **overrides.get("model", {})}, "model"),
        strategy=strategy,
        train=TrainSettings.from_dict(train),
        options={**(per_strategy.get("options") or {}), **overrides.get("options", {})},
        pet=pet,
        pet_settings=pet_settings,
        seed=seed,
        device=device,
        amp=amp or scenario.get("amp", "off"),
        loggers=list(scenario.get("loggers") or []),
        tta=tta,
        tta_settings=tta_settings,
    )
