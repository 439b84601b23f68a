"""``clpeft tune``: search a strategy's settings on one stream with Ray Tune, report the best on other streams.

Tuning on the stream one reports flatters every method, most of all those with many settings. A tune file names a
**tuning stream** and one or more **report streams** that must differ from it (another class order, another data
set, or a held-out part of the training data: ``stream.validation_fraction``)::

    name: lae_digits
    strategy: lae
    pet: adapter                                  # optional: the scenario's PET for the strategy otherwise
    tune_on: {scenario: digits_b0_inc2, set: {stream.class_order_seed: 101}}
    report_on:
      - {scenario: mnist5k_b0_inc2, set: {stream.class_order_seed: 7}}
    space:                                        # the dotted keys --set takes
      train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      options.ema_decay: {choice: [0.99, 0.999, 0.9999]}
      pet.bottleneck: {randint: [2, 17]}          # integers in [2, 17)
      train.weight_decay: {uniform: [0.0, 0.01]}
    metric: final_accuracy                        # or average_incremental_accuracy, forgetting_max (minimised)
    trials: 8
    scheduler: fifo                               # every trial runs every experience; asha: stop weak trials
                                                  # early by their accuracy after each experience
    tune_seed: 0                                  # the seed every trial runs with
    search_seed: 0                                # the seed of the random search
    seeds: [0, 1, 2]                              # report seeds
    defaults: true                                # also report the scenario's own settings, next to the tuned ones
    fixed: {train: {epochs: 2}}                   # every tuning and report run
    resources: {cpus: 1, gpus: 0}                 # what each trial and run asks Ray for
    out: runs/tune/lae_digits                     # default runs/tune/NAME
    allow_tuning_on_report_stream: false          # true: accept a report stream equal to the tuning stream

The search runs on Ray Tune (random search from ``search_seed``; with ``asha``, Ray's ASHA stops trials early by
the accuracy after each experience), resumable: re-running the command restores an interrupted search, and every trial is a clpeft run
directory that continues from its checkpoint. The best settings are written as one scenario file per report stream
(``OUT/tuned/*.yaml``, runnable with ``clpeft run``), whose strategy entry records the protocol (``provenance``:
the tuning stream, the trials, the space, the metric); the report runs carry it in their results and the report
labels each row "tuned on …", "defaults", or flags "tuned on this stream".
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clpeft.config import RunConfig, load_scenario, resolve, split_dotted
from clpeft.errors import ClpeftError
from clpeft.sweep import merge_sections
from clpeft.utils.io import atomic_write_json, atomic_write_text

TUNE_KEYS = {"name", "description", "imports", "strategy", "pet", "tune_on", "report_on", "space", "metric", "trials",
             "scheduler", "tune_seed", "search_seed", "seeds", "defaults", "fixed", "resources", "out",
             "allow_tuning_on_report_stream"}
STREAM_KEYS = {"scenario", "set"}
#: what a search can optimise: results metrics and their direction; during a run the same quantity over the seen
#: classes is reported after every experience (the accuracy on the seen classes is A_T once all are seen)
METRICS = {"final_accuracy": ("max", "accuracy_seen"), "average_incremental_accuracy": ("max", "average_incremental_accuracy"),
           "forgetting_max": ("min", "forgetting_max")}
DISTRIBUTIONS = {"loguniform": 2, "uniform": 2, "randint": 2, "choice": None}
SCHEDULERS = ("asha", "fifo")


@dataclass
class StreamRef:
    """A scenario with settings on top: the tuning stream or one report stream."""

    scenario_name: str
    scenario: dict
    overrides: dict
    label: str


@dataclass
class TuneSpec:
    name: str
    strategy: str
    pet: str | None
    tune_on: StreamRef
    report_on: list[StreamRef]
    space: dict
    metric: str
    trials: int
    scheduler: str
    tune_seed: int
    search_seed: int
    seeds: list[int]
    defaults: bool
    fixed: dict
    cpus: float
    gpus: float
    out: Path
    imports: list = field(default_factory=list)
    description: str = ""

    @property
    def mode(self) -> str:
        return METRICS[self.metric][0]


def _stream_ref(value, where: str, base: Path) -> StreamRef:
    if isinstance(value, str):
        value = {"scenario": value}
    if not isinstance(value, dict) or "scenario" not in value:
        raise ClpeftError(f"{where} must be a scenario name or {{scenario: NAME, set: {{stream.class_order_seed: 7}}}}")
    unknown = sorted(set(value) - STREAM_KEYS)
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} in {where}; use scenario and set")
    name = value["scenario"]
    if not isinstance(name, str):
        raise ClpeftError(f"{where}.scenario must be a scenario name or path, got {name!r}")
    path = Path(name)
    scenario = load_scenario(str(base / path) if not path.is_absolute() and (base / path).is_file() else name)
    sets = value.get("set") or {}
    if not isinstance(sets, dict):
        raise ClpeftError(f"{where}.set must map dotted keys to values, e.g. {{stream.class_order_seed: 7}}")
    named, overrides = split_dotted(sets, f"{where}.set")
    if named:
        raise ClpeftError(f"{where}.set: {sorted(named)[0]!r} is not a dotted setting; the tune file names the "
                          "strategy, PET and seeds")
    label = scenario["name"] + "".join(f" {k}={v}" for k, v in sorted(sets.items()))
    return StreamRef(name, scenario, overrides, label)


def _space(value, where: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise ClpeftError(f"{where} is empty; give at least one setting to search, e.g. "
                          "space: {train.lr: {loguniform: [1.0e-4, 1.0e-2]}}")
    out = {}
    for key, dist in value.items():
        split_dotted({key: None}, f"{where}")  # a dotted setting (train., options., pet., model., stream., tta.)
        if "." not in str(key):
            raise ClpeftError(f"{where}: {key!r} is not a dotted setting; use e.g. train.lr or options.NAME")
        if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
            raise ClpeftError(f"{where}.{key} must be one of {{loguniform: [low, high]}}, {{uniform: [low, high]}}, "
                              "{randint: [low, high]}, {choice: [a, b, ...]}")
        kind, args = next(iter(dist.items()))
        if not isinstance(args, list) or not args:
            raise ClpeftError(f"{where}.{key}.{kind} needs a list, e.g. {kind}: [1, 2]")
        if DISTRIBUTIONS[kind] is not None:
            if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) \
                    or not args[0] < args[1]:
                raise ClpeftError(f"{where}.{key}.{kind} needs [low, high] with low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise ClpeftError(f"{where}.{key}.loguniform needs low > 0, got {args[0]!r}")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise ClpeftError(f"{where}.{key}.randint needs integers [low, high) , got {args!r}")
        out[str(key)] = (kind, list(args))
    return out


def corners(space: dict) -> list[dict]:
    """Points at the edges of the space (each setting's low end, then its high end), to check every value the search
    can draw is accepted before anything runs."""
    low, high = {}, {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            low[key], high[key] = args[0], args[-1]
        elif kind == "randint":
            low[key], high[key] = args[0], args[1] - 1
        else:
            low[key], high[key] = args[0], args[1]
    points = [low, high]
    for key, (kind, args) in space.items():
        if kind == "choice":
            points += [{**low, key: a} for a in args[1:-1]]
    return points


def load_tune(path: str | Path, out: str | Path | None = None, device: str = "cpu") -> TuneSpec:
    """The tune file, every setting checked (the space's edges resolved on every stream) before anything runs."""
    from clpeft.plugins import import_plugins
    from clpeft.sweep import fixed_and_resources, read_spec_file

    path = Path(path)
    spec, imports = read_spec_file(path, "tune", TUNE_KEYS, "a mapping with strategy, tune_on, report_on and space "
                                                            "(see clpeft tune --help)")
    for key in ("strategy", "tune_on", "report_on", "space"):
        if key not in spec:
            raise ClpeftError(f"{path} has no `{key}:`; a tune file needs strategy, tune_on, report_on and space")
    import_plugins(imports)
    metric = spec.get("metric", "final_accuracy")
    if metric not in METRICS:
        raise ClpeftError(f"metric {metric!r} cannot be tuned; use one of {', '.join(METRICS)}")
    scheduler = spec.get("scheduler", "fifo")
    if scheduler not in SCHEDULERS:
        raise ClpeftError(f"scheduler {scheduler!r} is not known; use one of {', '.join(SCHEDULERS)}")
    ints = {}
    for key, default, low in (("trials", 8, 1), ("tune_seed", 0, 0), ("search_seed", 0, 0)):
        value = spec.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ClpeftError(f"{key} must be an integer ≥ {low}, got {value!r}")
        ints[key] = value
    seeds = spec.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                           for s in seeds):
        raise ClpeftError(f"seeds must be a non-empty list of integers ≥ 0, got {seeds!r}")
    fixed, resources = fixed_and_resources(spec, path)
    strategy, pet = spec["strategy"], spec.get("pet")
    if not isinstance(strategy, str):
        raise ClpeftError(f"strategy must be one strategy's name, got {strategy!r}; write one tune file per strategy")
    tune_on = _stream_ref(spec["tune_on"], "tune_on", path.parent)
    report_values = spec["report_on"] if isinstance(spec["report_on"], list) else [spec["report_on"]]
    if not report_values:
        raise ClpeftError("report_on is empty; name at least one stream to report on")
    report_on = [_stream_ref(v, f"report_on[{i}]", path.parent) for i, v in enumerate(report_values)]
    space = _space(spec["space"], "space")
    name = str(spec.get("name") or path.stem)
    tuned = TuneSpec(name=name, strategy=strategy, pet=pet, tune_on=tune_on, report_on=report_on, space=space,
                     metric=metric, trials=ints["trials"], scheduler=scheduler, tune_seed=ints["tune_seed"],
                     search_seed=ints["search_seed"], seeds=seeds, defaults=bool(spec.get("defaults", True)),
                     fixed=fixed, cpus=float(resources.get("cpus", 1)), gpus=float(resources.get("gpus", 0)),
                     out=Path(out or spec.get("out") or Path("runs") / "tune" / name), imports=imports,
                     description=str(spec.get("description") or ""))
    for point in corners(space):  # unknown keys and out-of-range values fail here, on every stream
        trial_config(tuned, point, device)
        for ref in report_on:
            report_config(tuned, ref, tuned.seeds[0], point, device=device)
    check_streams_differ(tuned, device, allowed=bool(spec.get("allow_tuning_on_report_stream", False)))
    return tuned


def _point_overrides(point: dict) -> dict:
    return split_dotted(point, "space")[1]


def trial_config(spec: TuneSpec, point: dict, device: str = "cpu") -> RunConfig:
    """One trial: the tuning stream with the fixed settings and the point drawn by the search."""
    overrides = merge_sections(merge_sections(spec.fixed, spec.tune_on.overrides), _point_overrides(point))
    return resolve(spec.tune_on.scenario, strategy=spec.strategy, pet=spec.pet, seed=spec.tune_seed, device=device,
                   overrides=overrides, imports=spec.imports)


def report_config(spec: TuneSpec, ref: StreamRef, seed: int, point: dict | None, device: str = "cpu") -> RunConfig:
    """A report run: the report stream with the fixed settings and, unless ``point`` is None (defaults), the tuned
    ones (the tuned runs themselves come from the written scenario, which carries their provenance)."""
    overrides = merge_sections(spec.fixed, ref.overrides)
    if point is not None:
        overrides = merge_sections(overrides, _point_overrides(point))
    return resolve(ref.scenario, strategy=spec.strategy, pet=spec.pet, seed=seed, device=device, overrides=overrides,
                   imports=spec.imports)


def check_streams_differ(spec: TuneSpec, device: str, allowed: bool) -> None:
    """A report stream equal to the tuning stream (same data, class order, experiences and evaluated split, for some
    report seed) is refused unless the tune file asks for it by name."""
    from clpeft.streams.stream import identity_of_config

    tuning = identity_of_config(trial_config(spec, corners(spec.space)[0], device).stream, spec.tune_seed)
    for ref in spec.report_on:
        for seed in spec.seeds:
            config = report_config(spec, ref, seed, None, device=device)
            if identity_of_config(config.stream, seed) == tuning and not allowed:
                raise ClpeftError(f"report stream {ref.label!r} with seed {seed} is the tuning stream (same data, class "
                                  "order and test split); report on another class order (set: {stream.class_order_seed: "
                                  "N}), another data set, or tune on a held-out split (tune_on set: "
                                  "{stream.validation_fraction: 0.2}); allow_tuning_on_report_stream: true accepts it")


# ------------------------------------------------------------------------------------------------- search
def _search_space(space: dict) -> dict:
    from ray import tune

    make = {"loguniform": lambda a: tune.loguniform(*a), "uniform": lambda a: tune.uniform(*a),
            "randint": lambda a: tune.randint(*a), "choice": lambda a: tune.choice(a)}
    return {key: make[kind](args) for key, (kind, args) in space.items()}


def _trainable(spec: TuneSpec, device: str):
    """The function Ray Tune calls per trial: a clpeft run into OUT/trials/RUN_ID, reporting after every experience."""
    metric_mode, live_key = METRICS[spec.metric]
    trials_dir = (spec.out / "trials").resolve()

    def trainable(point: dict) -> None:
        import torch
        from ray import tune

        from clpeft import rundir
        from clpeft.run import run
        from clpeft.strategies.registry import get_strategy

        torch.set_num_threads(max(1, int(spec.cpus)))
        config = trial_config(spec, point, device)
        out = trials_dir / config.run_id
        if rundir.plan(out, config.run_id, resume=True) == "complete":
            results = json.loads((out / rundir.RESULTS).read_text())
            tune.report({"objective": results["metrics"][spec.metric], "experience": len(results["accuracy_matrix"]),
                         "run_id": config.run_id, "final": True})
            return
        n = config.stream.n_experiences

        def report(i: int, live: dict) -> None:
            if i < n - 1:
                tune.report({"objective": live[live_key], "experience": i + 1, "run_id": config.run_id, "final": False})

        results = run(config, out_dir=out, resume=get_strategy(config.strategy).resumable, on_metrics=report)
        tune.report({"objective": results["metrics"][spec.metric], "experience": n, "run_id": config.run_id,
                     "final": True, "health": results.get("health", {}).get("status", "ok")})

    return trainable


def run_search(spec: TuneSpec, address: str | None = None, workers: int | None = None, device: str = "cpu",
               log=print) -> list[dict]:
    """The search on Ray Tune (restored when OUT/search holds an interrupted one); one record per trial."""
    from clpeft.sweep import ray_session

    with ray_session(address, workers * spec.cpus if workers else None):
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
        from ray.tune.search import BasicVariantGenerator

        storage = (spec.out / "ray").resolve()
        trainable = tune.with_resources(_trainable(spec, device), {"cpu": spec.cpus, "gpu": spec.gpus})
        path = storage / "search"
        if tune.Tuner.can_restore(str(path)):
            log(f"clpeft tune: restoring the search in {path}")
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            n = trial_config(spec, corners(spec.space)[0], device).stream.n_experiences
            scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=n, grace_period=1, reduction_factor=2)
                         if spec.scheduler == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=_search_space(spec.space),
                tune_config=tune.TuneConfig(metric="objective", mode=spec.mode, num_samples=spec.trials,
                                            scheduler=scheduler,
                                            search_alg=BasicVariantGenerator(random_state=spec.search_seed)),
                run_config=tune.RunConfig(name="search", storage_path=str(storage), verbose=0))
        grid = tuner.fit()
    records = []
    for result in grid:
        m = result.metrics or {}
        records.append({"point": {k: result.config[k] for k in spec.space} if result.config else {},
                        "objective": m.get("objective"), "experiences_run": m.get("experience"),
                        "stopped_early": not m.get("final", False), "run_id": m.get("run_id"),
                        "health": m.get("health"), "error": str(result.error).splitlines()[0] if result.error else None})
    return records


def best_trial(spec: TuneSpec, records: list[dict]) -> dict:
    finished = [r for r in records if r["objective"] is not None and not r["stopped_early"] and not r["error"]
                and r.get("health") in (None, "ok")]
    if not finished:
        raise ClpeftError(f"no trial of {spec.name} finished healthy (see {spec.out / 'trials'}); widen or move the "
                          "space, or raise trials")
    sign = 1 if spec.mode == "max" else -1
    return max(finished, key=lambda r: sign * r["objective"])  # max keeps the first of equal values


# ------------------------------------------------------------------------------------------------ outputs
def provenance(spec: TuneSpec, records: list[dict], best: dict, device: str = "cpu") -> dict:
    from clpeft.streams.stream import identity_of_config

    tuning = trial_config(spec, best["point"], device)
    return {"tuned_on": spec.tune_on.label, "tuning_seed": spec.tune_seed,
            "tuning_stream": identity_of_config(tuning.stream, spec.tune_seed),
            "trials": len(records), "finished_trials": sum(not r["stopped_early"] and not r["error"] for r in records),
            "metric": spec.metric, "best_value": best["objective"], "scheduler": spec.scheduler,
            "search": f"random (Ray Tune BasicVariantGenerator, seed {spec.search_seed})",
            "space": {k: {kind: args} for k, (kind, args) in spec.space.items()}, "tune_file": spec.name}


def tuned_scenario(spec: TuneSpec, ref: StreamRef, point: dict, prov: dict) -> dict:
    """The report stream's scenario with the tuned settings in the strategy's entry (and the stream's own settings in
    its stream section), so that `clpeft run FILE --strategy S` runs what the report ran."""
    scenario = json.loads(json.dumps({k: v for k, v in ref.scenario.items() if k not in ("imports", "strategies")}))
    scenario["imports"] = list(dict.fromkeys(list(spec.imports) + list(ref.scenario.get("imports") or [])))
    settings = merge_sections(merge_sections(spec.fixed, ref.overrides), _point_overrides(point))
    scenario["stream"] = {**(scenario.get("stream") or {}), **settings.pop("stream", {})}
    entry = json.loads(json.dumps((ref.scenario.get("strategies") or {}).get(spec.strategy) or {}))
    for section, key in (("train", "train"), ("model", "model"), ("options", "options")):
        if settings.get(section):
            entry[key] = {**(entry.get(key) or {}), **settings[section]}
    if settings.get("pet"):
        entry["pet"] = spec.pet or entry.get("pet")
        entry["pet_settings"] = {**(entry.get("pet_settings") or {}), **settings["pet"]}
    if settings.get("tta"):
        scenario["tta"] = {**(scenario.get("tta") or {}), **settings["tta"]}
    if spec.pet and "pet" not in entry:
        entry["pet"] = spec.pet
    entry["provenance"] = prov
    scenario["strategies"] = {spec.strategy: entry}  # only the tuned strategy: the file's settings are its own
    scenario["name"] = ref.scenario["name"]  # the report stream's runs; provenance tells tuned from defaults
    scenario["description"] = (f"{ref.label} with {spec.strategy}'s settings tuned by clpeft tune on {spec.tune_on.label} "
                               f"({prov['trials']} trials, {spec.metric})")
    scenario["strategy"] = spec.strategy
    return scenario


def run_tune(spec: TuneSpec, address: str | None = None, workers: int | None = None, device: str = "cpu",
             log=print) -> dict:
    """Search, write the tuned scenarios, run them (and the defaults) on the report streams, report."""
    from clpeft.sweep import ray_session

    with ray_session(address, workers * spec.cpus if workers else None):  # one Ray for the search and the report runs
        return _run_tune(spec, address, workers, device, log)


def _run_tune(spec: TuneSpec, address, workers, device, log) -> dict:
    from clpeft.sweep import Sweep, run_sweep

    records = run_search(spec, address, workers, device, log)
    best = best_trial(spec, records)
    prov = provenance(spec, records, best, device)
    tuned_dir = spec.out / "tuned"
    configs, files = [], []
    for ref in spec.report_on:
        scenario = tuned_scenario(spec, ref, best["point"], prov)
        path = tuned_dir / f"{ref.scenario['name']}-{spec.strategy}.yaml"
        atomic_write_text(path, yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True))
        files.append(str(path))
        tuned = load_scenario(str(path))
        for seed in spec.seeds:
            configs.append(resolve(tuned, strategy=spec.strategy, pet=spec.pet, seed=seed, device=device,
                                   imports=spec.imports))
            if spec.defaults:
                configs.append(report_config(spec, ref, seed, None, device=device))
    atomic_write_json(spec.out / "tune.json", {"name": spec.name, "strategy": spec.strategy, "best": best,
                                               "provenance": prov, "trials": records, "tuned_scenarios": files})
    sweep = Sweep(name=spec.name, configs=configs, out=spec.out / "report_runs", report=spec.out / "report",
                  cpus=spec.cpus, gpus=spec.gpus, description=spec.description)
    summary = run_sweep(sweep, engine="ray", address=address, workers=workers, log=log)
    log(f"clpeft tune: best {spec.metric} {best['objective']:.4f} on {spec.tune_on.label} with "
        + ", ".join(f"{k}={_short(v)}" for k, v in best["point"].items()) + f"; tuned scenarios in {tuned_dir}")
    return {"best": best, "provenance": prov, "tuned_scenarios": files, "report": summary}


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)
