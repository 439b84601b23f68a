"""Sweeps: a grid of runs from one YAML file, run on Ray (a local Ray by default, or a cluster) or in-process.

Sweep file layout (``grid`` or ``include`` is required, the rest optional)::

    name: digits_grid
    scenario: digits_b0_inc2          # or a list under grid.scenario
    grid:                             # every combination of these lists is one run
      strategy: [finetune, lae]
      pet: [adapter, none]
      seed: [0, 1, 2]
      train.lr: [0.001, 0.0005]       # dotted keys override train., model., stream. or options.
    include:                          # extra runs, each a point like one of the grid's
      - {strategy: joint, pet: none}
    fixed: {train: {epochs: 1}}       # overrides every run
    device: cpu
    amp: off
    resources: {cpus: 1, gpus: 0}     # what each run asks Ray for
    out: runs/sweeps/digits_grid      # default runs/sweeps/NAME
    report: reports/digits_grid       # default OUT/report

A run is known by its run id (a hash of its resolved config): a run whose ``results.json`` exists is
skipped, so a sweep re-launched after a crash or kill runs only what is unfinished (an interrupted run
continues from its checkpoint). A run that raises is recorded as failed (``RUN/failed.json`` and the sweep's
``sweep.json``), the sweep goes on, and the report lists it.
"""
from __future__ import annotations

import itertools
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clpeft.config import RunConfig, load_scenario, resolve
from clpeft.errors import ClpeftError
from clpeft.utils.io import atomic_write_json

SWEEP_KEYS = {"name", "description", "scenario", "grid", "include", "fixed", "device", "amp", "resources", "out",
              "report", "tta"}
POINT_KEYS = {"scenario", "strategy", "pet", "seed", "tta", "amp", "backbone"}
OVERRIDE_SECTIONS = ("train", "model", "stream", "options")
ENGINES = ("ray", "local")
FAILED = "failed.json"


@dataclass
class Sweep:
    name: str
    configs: list[RunConfig]
    out: Path
    report: Path
    cpus: float = 1.0
    gpus: float = 0.0
    description: str = ""
    points: list[dict] = field(default_factory=list)


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _point_overrides(point: dict, where: str) -> tuple[dict, dict]:
    """Split a point into named fields (strategy, seed, …) and ``{section: {key: value}}`` overrides."""
    named, overrides = {}, {}
    for key, value in point.items():
        section, dot, sub = key.partition(".")
        if dot:
            if section not in OVERRIDE_SECTIONS or not sub:
                raise ClpeftError(f"{where}: key {key!r} must start with one of {', '.join(OVERRIDE_SECTIONS)} (e.g. train.lr)")
            overrides.setdefault(section, {})[sub] = value
        elif key in POINT_KEYS:
            named[key] = value
        else:
            raise ClpeftError(f"{where}: unknown key {key!r}; use {', '.join(sorted(POINT_KEYS))} or a dotted key such as train.lr")
    if "backbone" in named:
        overrides.setdefault("model", {})["backbone"] = named.pop("backbone")
    return named, overrides


def expand_points(spec: dict) -> list[dict]:
    """The grid's combinations (in the file's key order), then the ``include`` points."""
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise ClpeftError("sweep `grid:` must map keys to lists of values, e.g. seed: [0, 1, 2]")
    keys = list(grid)
    values = []
    for key in keys:
        v = grid[key]
        values.append(v if isinstance(v, list) else [v])
        if isinstance(v, list) and not v:
            raise ClpeftError(f"sweep grid key {key!r} has an empty list; give at least one value")
    points = [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else []
    include = spec.get("include") or []
    if not isinstance(include, list) or not all(isinstance(p, dict) for p in include):
        raise ClpeftError("sweep `include:` must be a list of mappings, e.g. - {strategy: joint}")
    return points + [dict(p) for p in include]


def load_sweep(path: str | Path, out: str | Path | None = None, device: str | None = None) -> Sweep:
    path = Path(path)
    if not path.exists():
        raise ClpeftError(f"sweep file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClpeftError(f"{path} is not valid YAML; fix the syntax") from exc
    if not isinstance(spec, dict):
        raise ClpeftError(f"{path} must be a mapping with a `grid:` (see `clpeft sweep --help`)")
    unknown = sorted(set(spec) - SWEEP_KEYS)
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(sorted(SWEEP_KEYS))}")
    points = expand_points(spec)
    if not points:
        raise ClpeftError(f"{path} defines no runs; add a `grid:` (e.g. seed: [0, 1]) or `include:`")
    name = str(spec.get("name") or path.stem)
    fixed = spec.get("fixed") or {}
    unknown = sorted(set(fixed) - set(OVERRIDE_SECTIONS))
    if unknown:
        raise ClpeftError(f"unknown section {unknown[0]!r} under fixed:; use {', '.join(OVERRIDE_SECTIONS)}")
    resources = spec.get("resources") or {}
    bad = sorted(set(resources) - {"cpus", "gpus"})
    if bad:
        raise ClpeftError(f"unknown resource {bad[0]!r}; use cpus and gpus")
    scenarios: dict[str, dict] = {}
    configs, seen = [], set()
    for i, point in enumerate(points):
        named, overrides = _point_overrides(point, f"{path} run {i}")
        scenario_name = named.get("scenario") or spec.get("scenario")
        if not scenario_name:
            raise ClpeftError(f"{path}: no scenario for run {i}; add `scenario:` at the top or to the grid")
        if scenario_name not in scenarios:
            scenarios[scenario_name] = load_scenario(str(scenario_name))
        merged = _merge(fixed, overrides)
        config = resolve(scenarios[scenario_name], strategy=named.get("strategy"), pet=named.get("pet"),
                         seed=named.get("seed"), device=device or spec.get("device", "cpu"),
                         amp=named.get("amp", spec.get("amp")), overrides=merged, tta=named.get("tta", spec.get("tta")))
        if config.run_id not in seen:  # e.g. a grid over pet for a strategy whose setting ignores it
            seen.add(config.run_id)
            configs.append(config)
    out_dir = Path(out or spec.get("out") or Path("runs") / "sweeps" / name)
    return Sweep(name=name, configs=configs, out=out_dir, report=Path(spec.get("report") or out_dir / "report"),
                 cpus=float(resources.get("cpus", 1)), gpus=float(resources.get("gpus", 0)),
                 description=str(spec.get("description") or ""), points=points)


# ---------------------------------------------------------------------------------------------- one run
def execute(config: RunConfig, out_dir: str | Path, threads: int | None = None) -> dict:
    """Run one config into ``out_dir`` and say how it went; never raises for the run's own errors.

    Finished runs (``results.json`` present) are skipped; an interrupted resumable run continues from its
    checkpoint; an error is written to ``failed.json`` (atomically) and returned as ``status: failed``.
    """
    import torch

    from clpeft.run import run
    from clpeft.strategies.base import get_strategy

    out_dir = Path(out_dir)
    record = {"run_id": config.run_id, "out": str(out_dir)}
    if (out_dir / "results.json").exists():
        return {**record, "status": "skipped"}
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    start = time.perf_counter()
    try:
        results = run(config, out_dir=out_dir, resume=get_strategy(config.strategy).resumable)
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
        failure = {"run_id": config.run_id, "config": config.as_dict(), "error_type": type(exc).__name__,
                   "error": str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
                   "traceback": traceback.format_exc()[-4000:]}
        atomic_write_json(out_dir / FAILED, failure)
        return {**record, "status": "failed", "error_type": failure["error_type"], "error": failure["error"],
                "seconds": round(time.perf_counter() - start, 3)}
    (out_dir / FAILED).unlink(missing_ok=True)  # an earlier failure of this run is history now
    return {**record, "status": "done", "seconds": round(time.perf_counter() - start, 3),
            "final_accuracy": results["metrics"]["final_accuracy"]}


# ---------------------------------------------------------------------------------------------- engines
def run_local(sweep: Sweep, log=print) -> list[dict]:
    records = []
    for config in sweep.configs:
        record = execute(config, sweep.out / config.run_id)
        log(_line(record))
        records.append(record)
    return records


def run_ray(sweep: Sweep, address: str | None = None, workers: int | None = None, log=print) -> list[dict]:
    """One Ray task per run, each asking for ``sweep.cpus``/``sweep.gpus``; results come back as they finish."""
    try:
        import ray
    except ImportError:
        raise ClpeftError("the Ray engine needs Ray: pip install 'clpeft[ray]', or pass --engine local") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": workers * sweep.cpus if workers else None,
                                                       "include_dashboard": False}
        ray.init(log_to_driver=False, **{k: v for k, v in kwargs.items() if v is not None})
    try:
        task = ray.remote(num_cpus=sweep.cpus, num_gpus=sweep.gpus, max_retries=0)(execute)
        threads = max(1, int(sweep.cpus))
        pending = {task.remote(config, str(sweep.out / config.run_id), threads): config for config in sweep.configs}
        records = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            config = pending.pop(ready[0])
            try:
                record = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - the worker itself died (OOM kill, lost node)
                record = {"run_id": config.run_id, "out": str(sweep.out / config.run_id), "status": "failed",
                          "error_type": type(exc).__name__, "error": str(exc).splitlines()[0][:500]}
                atomic_write_json(sweep.out / config.run_id / FAILED, {**record, "config": config.as_dict()})
            log(_line(record))
            records.append(record)
        return records
    finally:
        if started_here:
            ray.shutdown()


def _line(record: dict) -> str:
    if record["status"] == "failed":
        return f"{record['run_id']}: FAILED {record['error_type']}: {record['error']}"
    if record["status"] == "skipped":
        return f"{record['run_id']}: finished before, skipped"
    return f"{record['run_id']}: A_T={record['final_accuracy']:.3f} ({record['seconds']:.1f} s)"


def run_sweep(sweep: Sweep, engine: str = "ray", address: str | None = None, workers: int | None = None,
              report: bool = True, log=print) -> dict:
    """Run every config of ``sweep`` on ``engine``, write ``OUT/sweep.json`` (atomically) and the report."""
    if engine not in ENGINES:
        raise ClpeftError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
    sweep.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = run_local(sweep, log) if engine == "local" else run_ray(sweep, address, workers, log)
    order = {c.run_id: i for i, c in enumerate(sweep.configs)}
    records.sort(key=lambda r: order[r["run_id"]])
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    summary = {"name": sweep.name, "engine": engine, "runs": len(records), **counts,
               "wall_seconds": round(time.perf_counter() - start, 3), "records": records}
    atomic_write_json(sweep.out / "sweep.json", summary)
    if report and counts["done"] + counts["skipped"] > 0:
        from clpeft.reports.report import build_report

        build_report([sweep.out], sweep.report, title=f"Sweep {sweep.name}", notes=sweep.description)
        summary["report"] = str(sweep.report / "index.md")
    return summary

