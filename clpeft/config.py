"""Run configuration: a scenario YAML (named stream + default settings) resolved into one typed, hashed config.

Scenario file layout (every key optional except ``stream``)::

    name: digits_b0_inc2
    imports: [my_method.py]       # plugin files or modules (strategies, data sets, backbones of your own)
    stream: {dataset: digits, n_experiences: 5, class_order_seed: seed}
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

Everything is checked here, from every entry point (scenario files, ``--option``/``--set``, sweep grids, the
Python API), before any data or model is built: unknown keys, wrong types, out-of-range values, strategy
options, and settings that would make a method learn nothing. The resolved config records every setting
in full (defaults filled in), so two results files with equal configs ran the same experiment.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from clpeft.errors import ClpeftError
from clpeft.utils.typed import Settings, coerce, dataclass_from_dict, option

SCENARIO_KEYS = {"name", "description", "imports", "stream", "model", "train", "strategy", "strategies", "pets",
                 "seed", "amp", "loggers", "tta"}
PER_STRATEGY_KEYS = ("train", "model", "options", "pet", "pet_settings", "provenance")
#: settings added after runs were recorded: left out of the config hash while they hold these values, so the run ids
#: of earlier runs stay what they were
LATER_DEFAULTS = {("stream", "validation_fraction"): 0.0, ("provenance",): None, ("train", "bank_budget"): None,
                  ("stream", "eval_unseen"): True, ("pet_settings", "keep_scores"): True}
OVERRIDE_SECTIONS = ("train", "model", "stream", "options", "pet", "tta")
AMP_MODES = ("off", "bf16")
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"


OPTIMIZERS = ("adam", "adamw", "sgd")
LOSS_SCOPES = ("seen", "current")
SCHEDULES = ("constant", "cosine", "cosine_quarter")


EVAL_ORDERS = ("iid", "class_grouped", "dirichlet")


@dataclass
class StreamConfig(Settings):
    """A named data set cut into experiences."""

    section = "stream"

    dataset: str = option("digits", "registered data set (see `clpeft list`)")
    n_experiences: int = option(5, "experiences in the stream", ge=1)
    first_experience_classes: int | None = option(None, "k for a Bk-IncN stream (null: B0, equal experiences)", ge=1)
    class_order_seed: int | str | None = option("seed", "seed of the class permutation: an integer, `seed` (the "
                                                        "run's seed) or null (natural order 0..C-1)")
    class_order: list[int] | None = option(None, "explicit class order (a permutation of the data set's classes)")
    task_incremental: bool = option(False, "experiences carry task labels (task-IL view)")
    root: str | None = option(None, "folder holding the data set (online data sets)")
    download: bool = option(False, "download the data set into root when it is missing (needs internet)")
    image_size: int = option(224, "side of the images the data set yields (online image sets)", ge=1)
    eval_order: str = option("iid", "order of test batches", choices=EVAL_ORDERS)
    dirichlet_alpha: float = option(0.1, "concentration of dirichlet test batches", gt=0.0)
    augmentation: str = option("resized_crop", "training augmentation of online image sets (cifar: PyCIL's 32-px pipeline)",
                               choices=("resized_crop", "cifar"))
    device_augment: bool = option(False, "keep the images in memory as uint8 and crop, flip and resize whole batches on "
                                         "the device (cifar100 with resized_crop)")
    eval_unseen: bool = option(True, "evaluate test experiences whose classes no head predicts yet (class-IL accuracy 0 "
                                     "by construction); false skips them, so an evaluation costs O(classes seen): long "
                                     "streams")
    validation_fraction: float = option(0.0, "evaluate on this share of each class's training data, held out from "
                                             "training (a tuning split), instead of the test set", ge=0.0, lt=1.0)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.class_order_seed, str) and self.class_order_seed != "seed":
            raise ClpeftError(f"stream.class_order_seed must be an integer, `seed` or null, got {self.class_order_seed!r}")
        if self.class_order is not None and self.class_order_seed not in ("seed", None):
            raise ClpeftError("give stream.class_order or stream.class_order_seed, not both")


@dataclass
class TrainSettings(Settings):
    """Optimisation settings shared by every strategy (per-strategy settings go to ``options``)."""

    section = "train"

    epochs: int = option(1, "epochs per experience", ge=0)
    lr: float = option(1e-3, "learning rate", gt=0.0)
    batch_size: int = option(32, "training mini-batch size", ge=1)
    eval_batch_size: int = option(256, "test batch size", ge=1)
    optimizer: str = option("adam", "optimizer", choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "weight decay", ge=0.0)
    momentum: float = option(0.9, "SGD momentum", ge=0.0)
    loss_scope: str = option("seen", "classes in the cross-entropy: all seen so far, or the current experience's",
                             choices=LOSS_SCOPES)
    drop_last: bool = option(False, "drop the last incomplete training batch")
    schedule: str = option("constant", "learning-rate schedule per epoch (cosine: to 0 over the phase; "
                                       "cosine_quarter: CODA-Prompt's, lr·cos(0.495π·max(e−1, 0)/(E−1)) in epoch e)", choices=SCHEDULES)
    grad_clip_norm: float | None = option(None, "clip the gradient norm to this value (null: no clipping)", gt=0.0)
    num_workers: int = option(0, "data-loading worker processes for image files and test batches (0: in-process)", ge=0)
    pin_memory: bool = option(False, "page-locked host batches (faster copies to a GPU)")
    fused_optimizer: bool = option(False, "the optimizer's fused kernel (one launch per step; CUDA)")
    compile: str = option("off", "torch.compile the backbone (eager: graph capture only, for checking)",
                          choices=("off", "default", "reduce-overhead", "max-autotune", "eager"))
    bank_budget: int | None = option(None, "most PET instances a method's summed bank keeps: before a new one would pass "
                                           "it, the oldest are folded into the weights they adapt, each with its bank "
                                           "weight (null: the bank grows with the stream)", ge=1)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainSettings":
        return dataclass_from_dict(cls, values, "training setting", "train")


@dataclass
class ModelConfig(Settings):
    section = "model"
    backbone: str = option("vit_tiny_fmnist", "a timm model name or one of `clpeft list`'s backbones")
    pretrained: bool = option(True, "load the backbone's weights (hub, bundled file or package)")
    checkpoint: str | None = option(None, "local weights file (safetensors, or a weights_only torch file)")
    head_init_std: float | None = option(None, "new head rows ~ N(0, std²) with zero bias (null: PyTorch's init)", gt=0.0)
    normalize: bool = option(True, "normalise inputs with the backbone's mean/std (false: [0, 1] pixels)")
    kwargs: dict = option(default_factory=dict, doc="keyword arguments for timm.create_model (e.g. img_size, patch_size)")
    input_size: int | None = option(None, "input side the backbone expects (null: read from the built model)", ge=1)
    mean: list[float] | None = option(None, "input normalisation mean (null: the backbone's)")
    std: list[float] | None = option(None, "input normalisation std (null: the backbone's)")


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
    imports: list = field(default_factory=list)
    provenance: dict | None = None  # where tuned settings came from (clpeft tune); None: the scenario's own

    def as_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that changes the numbers or what they claim (loggers only observe, so they are left
        out; so are settings added later while they hold their old behaviour: LATER_DEFAULTS)."""
        data = self.as_dict()
        data.pop("loggers", None)
        for path, default in LATER_DEFAULTS.items():
            *parents, key = path
            holder = data
            for parent in parents:
                holder = holder[parent]
            if holder.get(key) == default:
                holder.pop(key, None)
        payload = json.dumps(data, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        parts = [self.name, self.strategy] + ([self.pet] if self.pet else []) + ([self.tta] if self.tta else []) \
            + [f"s{self.seed}", self.config_hash()]
        return "-".join(parts)

    def pet_config(self):
        from clpeft.pet.config import pet_config

        return pet_config(self.pet, self.pet_settings) if self.pet else None


def find_scenario(path_or_name: str) -> Path:
    if not isinstance(path_or_name, str) or not path_or_name:
        raise ClpeftError(f"a scenario is a YAML path or a name, got {path_or_name!r}")
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.exists():
        raise ClpeftError(f"scenario {path} is a directory; give a YAML file")
    named = SCENARIOS_DIR / f"{path_or_name}.yaml"
    if named.exists():
        return named
    available = sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml")) if SCENARIOS_DIR.exists() else []
    raise ClpeftError(f"scenario {path_or_name!r} not found; give a YAML path or one of: {', '.join(available)}")


def read_yaml(path: Path, what: str = "file") -> object:
    """``yaml.safe_load`` with one-line errors: syntax (with the line), forbidden tags, unreadable files."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ClpeftError(f"{path} is not a UTF-8 text file; give a YAML {what}") from None
    except OSError as exc:
        raise ClpeftError(f"cannot read {path} ({exc.strerror or type(exc).__name__}); check the path and permissions") from None
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ClpeftError(f"{path} uses a YAML tag that is not allowed{where} ({(exc.problem or '').strip()}); "
                          "clpeft reads plain YAML only (no python/ tags)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ClpeftError(f"{path} is not valid YAML{where}; fix the syntax") from None


def load_scenario(path_or_name: str) -> dict:
    """The scenario as a mapping; its ``imports`` are made absolute and imported (they may add datasets etc.)."""
    from clpeft.plugins import import_plugins, normalize_import

    path = find_scenario(path_or_name)
    data = read_yaml(path, "scenario")
    if not isinstance(data, dict) or "stream" not in data:
        raise ClpeftError(f"{path} must be a mapping with at least a `stream:` section")
    unknown = sorted(set(map(str, data)) - SCENARIO_KEYS)
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(sorted(SCENARIO_KEYS))}")
    for key in ("stream", "model", "train", "strategies", "pets", "tta"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ClpeftError(f"`{key}:` in {path} must be a mapping, got {type(data[key]).__name__}")
    imports = data.get("imports") or []
    if not isinstance(imports, list):
        raise ClpeftError(f"`imports:` in {path} must be a list of plugin files or modules")
    data["imports"] = [normalize_import(spec, path.parent) for spec in imports]
    import_plugins(data["imports"])
    data.setdefault("name", path.stem)
    return data


def split_dotted(values: dict, where: str) -> tuple[dict, dict]:
    """``{"train.lr": 0.1, "seed": 1}`` → (``{"seed": 1}``, ``{"train": {"lr": 0.1}}``): named fields and
    per-section overrides, as ``--set`` and sweep grids write them."""
    named, overrides = {}, {}
    for key, value in values.items():
        section, dot, sub = str(key).partition(".")
        if dot:
            if section not in OVERRIDE_SECTIONS or not sub:
                raise ClpeftError(f"{where}: key {key!r} must start with one of {', '.join(OVERRIDE_SECTIONS)} "
                                  "(e.g. train.lr, options.ema_decay, pet.rank)")
            overrides.setdefault(section, {})[sub] = value
        else:
            named[key] = value
    return named, overrides


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ClpeftError(f"{where} must be a mapping, got {type(value).__name__}; fix the scenario file")
    return value


def experience_sizes_for(stream: StreamConfig) -> list[int] | None:
    """Classes per experience when the data set's class count is known without loading it."""
    from clpeft.streams.datasets import dataset_spec
    from clpeft.streams.stream import experience_sizes

    num_classes = dataset_spec(stream.dataset).num_classes
    if num_classes is None:
        return None
    if stream.class_order is not None:
        from clpeft.streams.stream import check_class_order

        check_class_order(stream.class_order, num_classes)
    return experience_sizes(num_classes, stream.n_experiences, stream.first_experience_classes)


def check_model(model: ModelConfig) -> None:
    """The backbone exists and a local checkpoint is a file, before anything is built."""
    from clpeft.models.backbones import spec_for
    from clpeft.models.text import TEXT_BACKBONES

    if model.backbone not in TEXT_BACKBONES:
        spec_for(model.backbone, model.pretrained)
    if model.checkpoint is not None and not Path(model.checkpoint).is_file():
        raise ClpeftError(f"checkpoint {model.checkpoint} does not exist; check the path")


def resolve(scenario: dict, strategy: str | None = None, pet: str | None = None, seed: int | None = None,
            device: str = "cpu", amp: str | None = None, overrides: dict | None = None, tta: str | None = None,
            imports: list | None = None, loggers: list | None = None) -> RunConfig:
    """Merge scenario defaults, the chosen strategy's best settings and command-line values, check them all."""
    from clpeft.evaluation.tta import get_tta
    from clpeft.pet.config import get_pet_kind
    from clpeft.plugins import import_plugins
    from clpeft.strategies.registry import get_strategy

    imports = list(dict.fromkeys(list(scenario.get("imports") or []) + list(imports or [])))
    import_plugins(imports)
    overrides = {k: _mapping(v, f"override section {k!r}") for k, v in (overrides or {}).items()}
    unknown = sorted(set(overrides) - set(OVERRIDE_SECTIONS))
    if unknown:
        raise ClpeftError(f"unknown override section {unknown[0]!r}; use {', '.join(OVERRIDE_SECTIONS)}")
    strategy = strategy or scenario.get("strategy") or "finetune"
    strategy = coerce(strategy, str, "strategy")
    strategy_cls = get_strategy(strategy)  # unknown name → one-line error
    per_strategy = _mapping((_mapping(scenario.get("strategies"), "strategies") or {}).get(strategy), f"strategies.{strategy}")
    unknown = sorted(set(per_strategy) - set(PER_STRATEGY_KEYS))
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} under strategies.{strategy}; use {', '.join(PER_STRATEGY_KEYS)}")

    train_values = {**_mapping(scenario.get("train"), "train"), **_mapping(per_strategy.get("train"), f"strategies.{strategy}.train"),
                    **overrides.get("train", {})}
    if strategy_cls.loss_scope is not None:  # the method fixes it: record what actually runs
        given = train_values.get("loss_scope")
        if given is not None and given != strategy_cls.loss_scope:
            raise ClpeftError(f"{strategy} always trains with loss_scope={strategy_cls.loss_scope}; drop train.loss_scope={given}")
        train_values["loss_scope"] = strategy_cls.loss_scope
    train = TrainSettings.from_dict(train_values)

    seed = coerce(scenario.get("seed", 0) if seed is None else seed, int, "seed")
    if seed < 0:
        raise ClpeftError(f"seed must be ≥ 0, got {seed}")
    stream = dataclass_from_dict(StreamConfig, {**_mapping(scenario["stream"], "stream"), **overrides.get("stream", {})},
                                 "stream setting", "stream")
    model = dataclass_from_dict(ModelConfig, {**_mapping(scenario.get("model"), "model"),
                                              **_mapping(per_strategy.get("model"), f"strategies.{strategy}.model"),
                                              **overrides.get("model", {})}, "model setting", "model")

    pet = pet if pet is not None else per_strategy.get("pet")
    pet = coerce(pet, str | None, "pet")
    if pet == "none":  # explicitly no PET, even where the scenario gives the strategy one
        pet = None
    pet_settings = {}
    if pet:
        kind = get_pet_kind(pet)
        values = dict(_mapping(_mapping(scenario.get("pets"), "pets").get(pet), f"pets.{pet}"))
        if pet == per_strategy.get("pet"):  # the strategy's own PET placement (e.g. JARe's attention projections)
            values.update(_mapping(per_strategy.get("pet_settings"), f"strategies.{strategy}.pet_settings"))
        values.update(overrides.get("pet", {}))
        pet_settings = kind.config.from_dict(values, f"pets.{pet}").as_dict()
    elif overrides.get("pet"):
        raise ClpeftError(f"pet.{sorted(overrides['pet'])[0]} is set but the run has no PET module; add --pet")
    strategy_cls.check_pet(pet)

    tta = coerce(tta, str | None, "tta")
    tta_settings = {}
    if tta:
        method = get_tta(tta)
        values = {**_mapping(_mapping(scenario.get("tta"), "tta").get(tta), f"tta.{tta}"), **overrides.get("tta", {})}
        tta_settings = asdict(method.config.from_dict(values))
    elif overrides.get("tta"):
        raise ClpeftError(f"tta.{sorted(overrides['tta'])[0]} is set but no test-time adaptation is; add --tta")

    options = strategy_cls.parse_options({**_mapping(per_strategy.get("options"), f"strategies.{strategy}.options"),
                                          **overrides.get("options", {})})
    strategy_cls.check_run(options, train, experience_sizes_for(stream))
    check_model(model)
    device = coerce(device, str, "device")
    from clpeft.utils.device import resolve_device

    resolve_device(device)  # unknown names, or cuda without a GPU, fail here
    amp = coerce(amp or scenario.get("amp", "off"), str, "amp")
    if amp not in AMP_MODES:
        raise ClpeftError(f"unknown amp mode {amp!r}; use one of {', '.join(AMP_MODES)}")
    loggers = scenario.get("loggers") if loggers is None else loggers
    if loggers is not None and not isinstance(loggers, list):
        raise ClpeftError("`loggers:` must be a list (e.g. [csv, tensorboard, wandb])")
    from clpeft.reports.loggers import check_loggers

    loggers = check_loggers(loggers or [])
    return RunConfig(
        name=coerce(str(scenario["name"]), str, "name"),
        stream=stream,
        model=model,
        strategy=strategy,
        train=train,
        options=asdict(options),
        pet=pet,
        pet_settings=pet_settings,
        seed=seed,
        device=device,
        amp=amp,
        loggers=list(loggers),
        tta=tta,
        tta_settings=tta_settings,
        imports=imports,
        provenance=_provenance(per_strategy.get("provenance"), strategy),
    )


def _provenance(value, strategy: str) -> dict | None:
    """A tuned scenario's record of where a strategy's settings came from (written by `clpeft tune`)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("tuned_on"), str):
        raise ClpeftError(f"strategies.{strategy}.provenance must be a mapping with `tuned_on:` (as clpeft tune "
                          "writes it); remove it to use the settings as the scenario's own")
    return dict(value)
