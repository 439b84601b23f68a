"""Sweeps: a grid of runs from one YAML file, run on Ray (a local Ray by default, or a cluster) or in-process.

Sweep file layout (``grid`` or ``include`` is required, the rest optional)::

    name: digits_grid
    imports: [my_method.py]           # plugin files or modules, imported here and in every Ray worker
    scenario: digits_b0_inc2          # or a list under grid.scenario
    grid:                             # every combination of these lists is one run
      strategy: [finetune, lae]
      pet: [adapter, none]
      seed: [0, 1, 2]
      train.lr: [0.001, 0.0005]       # dotted keys override train., model., stream., options., pet. or tta.
    include:                          # extra runs, each a point like one of the grid's
      - {strategy: joint, pet: none}
    grids:                            # more grids, each expanded like `grid` (e.g. extras on one scenario)
      - {strategy: [lae], options.align_heads: [true], seed: [0, 1, 2]}
    fixed: {train: {epochs: 1}}       # overrides every run (sections as the dotted keys)
    device: cpu
    amp: off
    resources: {cpus: 1, gpus: 0}     # what each run asks Ray for
    out: runs/sweeps/digits_grid      # default runs/sweeps/NAME
    report: reports/digits_grid       # default OUT/report

A run is known by its run id (a hash of its resolved config): a run whose ``results.json`` exists is
skipped, so a sweep re-launched after a crash or kill runs only what is unfinished (an interrupted run
continues from its checkpoint) — the rule of :func:`clpeft.rundir.plan`, shared with ``clpeft run``. A run
that raises is recorded as failed (``RUN/failed.json`` and the sweep's ``sweep.json``), the sweep goes on,
and the report lists it; a run that finished but did not learn is recorded as ``not_learned`` (or ``diverged``). A sweep holds
its output directory's lock, so two sweeps into one directory cannot overwrite each other's records.
"""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
import traceback
from dataclasses import dataclass, field
from pathlib import Path


from clpeft import rundir
from clpeft.config import OVERRIDE_SECTIONS, RunConfig, load_scenario, read_yaml, resolve, split_dotted
from clpeft.errors import ClpeftError
from clpeft.utils.io import atomic_write_json

SWEEP_KEYS = {"name", "description", "imports", "scenario", "grid", "grids", "include", "fixed", "device", "amp",
              "resources", "out", "report", "tta"}
POINT_KEYS = {"scenario", "strategy", "pet", "seed", "tta", "amp", "backbone"}
ENGINES = ("ray", "local")
FAILED = rundir.FAILED
STATUSES = ("done", "diverged", "not_learned", "at_chance", "skipped", "failed")


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


def merge_sections(base: dict, extra: dict) -> dict:
    """Section overrides ({section: {key: value}}) with ``extra`` over ``base``, one level deep."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _point_overrides(point: dict, where: str) -> tuple[dict, dict]:
    """Split a point into named fields (strategy, seed, …) and ``{section: {key: value}}`` overrides."""
    named, overrides = split_dotted(point, where)
    unknown = sorted(set(named) - POINT_KEYS, key=str)
    if unknown:
        raise ClpeftError(f"{where}: unknown key {unknown[0]!r}; use {', '.join(sorted(POINT_KEYS))} or a dotted key such as train.lr")
    if "backbone" in named:
        overrides.setdefault("model", {})["backbone"] = named.pop("backbone")
    return named, overrides


def _grid_points(grid, where: str) -> list[dict]:
    if not isinstance(grid, dict):
        raise ClpeftError(f"sweep `{where}` must map keys to lists of values, e.g. seed: [0, 1, 2]")
    keys = list(grid)
    values = []
    for key in keys:
        v = grid[key]
        if isinstance(v, list) and not v:
            raise ClpeftError(f"sweep grid key {key!r} has an empty list; give at least one value")
        values.append(v if isinstance(v, list) else [v])
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)] if keys else []


def expand_points(spec: dict) -> list[dict]:
    """The grid's combinations (in the file's key order), then each of ``grids``, then the ``include`` points."""
    points = _grid_points(spec.get("grid") or {}, "grid:")
    grids = spec.get("grids") or []
    if not isinstance(grids, list):
        raise ClpeftError("sweep `grids:` must be a list of grids, e.g. - {strategy: [lae], seed: [0, 1]}")
    for grid in grids:
        points += _grid_points(grid, "grids:")
    include = spec.get("include") or []
    if not isinstance(include, list) or not all(isinstance(p, dict) for p in include):
        raise ClpeftError("sweep `include:` must be a list of mappings, e.g. - {strategy: joint}")
    return points + [dict(p) for p in include]


def read_spec_file(path: Path, kind: str, keys: set, shape: str) -> tuple[dict, list]:
    """(the mapping, its `imports:` made absolute) of a sweep or tune file; unknown keys refused, naming the known."""
    from clpeft.plugins import normalize_import

    if not path.is_file():
        raise ClpeftError(f"{kind} file {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    spec = read_yaml(path, f"{kind} file")
    if not isinstance(spec, dict):
        raise ClpeftError(f"{path} must be {shape}")
    unknown = sorted(set(map(str, spec)) - keys)
    if unknown:
        raise ClpeftError(f"unknown key {unknown[0]!r} in {path}; known keys: {', '.join(sorted(keys))}")
    imports = spec.get("imports") or []
    if not isinstance(imports, list):
        raise ClpeftError(f"`imports:` in {path} must be a list of plugin files or modules")
    return spec, [normalize_import(i, path.parent) for i in imports]


def fixed_and_resources(spec: dict, path: Path) -> tuple[dict, dict]:
    """`fixed:` (section overrides for every run) and `resources:` (what each run asks Ray for), checked."""
    fixed = spec.get("fixed") or {}
    if not isinstance(fixed, dict) or not all(isinstance(v, dict) for v in fixed.values()):
        raise ClpeftError(f"`fixed:` in {path} must map sections to settings, e.g. fixed: {{train: {{epochs: 1}}}}")
    unknown = sorted(set(fixed) - set(OVERRIDE_SECTIONS))
    if unknown:
        raise ClpeftError(f"unknown section {unknown[0]!r} under fixed:; use {', '.join(OVERRIDE_SECTIONS)}")
    resources = spec.get("resources") or {}
    if not isinstance(resources, dict):
        raise ClpeftError("`resources:` must be a mapping, e.g. {cpus: 1, gpus: 0}")
    bad = sorted(set(resources) - {"cpus", "gpus"})
    if bad:
        raise ClpeftError(f"unknown resource {bad[0]!r}; use cpus and gpus")
    for key, value in resources.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ClpeftError(f"resources.{key} must be a number ≥ 0, got {value!r}")
    return fixed, resources


def load_sweep(path: str | Path, out: str | Path | None = None, device: str | None = None,
               imports: list | None = None, overrides: dict | None = None, loggers: list | None = None) -> Sweep:
    """Every run of the sweep file, resolved and checked (no run starts before all of them are valid);
    ``overrides`` (``{section: {key: value}}``, from ``--set``) apply to every run, over ``fixed:``."""
    from clpeft.plugins import import_plugins

    path = Path(path)
    spec, file_imports = read_spec_file(path, "sweep", SWEEP_KEYS, "a mapping with a `grid:` (see `clpeft sweep --help`)")
    imports = file_imports + list(imports or [])
    import_plugins(imports)
    points = expand_points(spec)
    if not points:
        raise ClpeftError(f"{path} defines no runs; add a `grid:` (e.g. seed: [0, 1]), `grids:` or `include:`")
    name = str(spec.get("name") or path.stem)
    fixed, resources = fixed_and_resources(spec, path)
    extra = overrides or {}
    scenarios: dict[str, dict] = {}
    configs, seen = [], set()
    for i, point in enumerate(points):
        named, overrides = _point_overrides(point, f"{path} run {i}")
        scenario_name = named.get("scenario") or spec.get("scenario")
        if not scenario_name:
            raise ClpeftError(f"{path}: no scenario for run {i}; add `scenario:` at the top or to the grid")
        if not isinstance(scenario_name, str):
            raise ClpeftError(f"{path} run {i}: scenario must be a name or a path, got {scenario_name!r}")
        if scenario_name not in scenarios:
            scenario_path = Path(scenario_name)
            if not scenario_path.is_absolute() and (path.parent / scenario_path).is_file():
                scenario_path = path.parent / scenario_path  # relative to the sweep file
            scenarios[scenario_name] = load_scenario(str(scenario_path) if scenario_path.is_file() else scenario_name)
        merged = merge_sections(merge_sections(fixed, overrides), extra)
        config = resolve(scenarios[scenario_name], strategy=named.get("strategy"), pet=named.get("pet"),
                         seed=named.get("seed"), device=device or spec.get("device", "cpu"),
                         amp=named.get("amp", spec.get("amp")), overrides=merged, tta=named.get("tta", spec.get("tta")),
                         imports=imports, loggers=loggers)
        if config.run_id not in seen:  # e.g. a grid over pet for a strategy whose setting ignores it
            seen.add(config.run_id)
            configs.append(config)
    out_dir = Path(out or spec.get("out") or Path("runs") / "sweeps" / name)
    return Sweep(name=name, configs=configs, out=out_dir, report=Path(spec.get("report") or out_dir / "report"),
                 cpus=float(resources.get("cpus", 1)), gpus=float(resources.get("gpus", 0)),
                 description=str(spec.get("description") or ""), points=points)


# ---------------------------------------------------------------------------------------------- one run
def execute(config: RunConfig, out_dir: str | Path, threads: int | None = None, group: str | None = None,
            progress: bool = False) -> dict:
    """Run one config into ``out_dir`` and say how it went: ``done``, ``diverged``, ``not_learned``, ``at_chance``,
    ``skipped`` or ``failed``.

    The shared rule (:func:`clpeft.rundir.plan`): this run's results present → skipped; an interrupted
    resumable run continues from its checkpoint. An error is written to ``failed.json`` (atomically) and
    returned, never raised: one run's failure does not stop a sweep.
    """
    import torch

    from clpeft.run import run
    from clpeft.strategies.registry import get_strategy

    from clpeft.plugins import import_plugins

    out_dir = Path(out_dir)
    record = {"run_id": config.run_id, "out": str(out_dir)}
    start = time.perf_counter()
    try:
        import_plugins(config.imports)  # a Ray worker is a fresh process: the run's plugins register here
        if rundir.plan(out_dir, config.run_id, resume=True) == "complete":
            health = rundir_health(out_dir)
            return {**record, "status": "skipped", **({"health": health} if health != "ok" else {})}
        if threads:
            torch.set_num_threads(max(1, int(threads)))
        results = run(config, out_dir=out_dir, resume=get_strategy(config.strategy).resumable, log_group=group,
                      progress=progress)
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
        failure = {"run_id": config.run_id, "config": config.as_dict(), "error_type": type(exc).__name__,
                   "error": str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__,
                   "traceback": traceback.format_exc()[-4000:]}
        try:  # the record the report lists failures from; an unwritable directory already said why in `error`
            atomic_write_json(out_dir / FAILED, failure)
        except OSError:
            pass
        return {**record, "status": "failed", "error_type": failure["error_type"], "error": failure["error"],
                "seconds": round(time.perf_counter() - start, 3)}
    health = results.get("health", {})
    status = health.get("status", "ok") if health.get("status", "ok") != "ok" else "done"
    return {**record, "status": status, "seconds": round(time.perf_counter() - start, 3),
            "final_accuracy": results["metrics"]["final_accuracy"],
            **({"reasons": health.get("reasons", [])} if status != "done" else {})}


def rundir_health(out_dir: Path) -> str:
    import json

    try:
        return json.loads((out_dir / rundir.RESULTS).read_text()).get("health", {}).get("status", "ok")
    except (OSError, ValueError):
        return "ok"


# ---------------------------------------------------------------------------------------------- engines
def run_local(sweep: Sweep, log=print, progress: bool = False) -> list[dict]:
    """One run after another in this process (``progress``: one line per epoch, so nothing is silent for minutes)."""
    records = []
    for config in sweep.configs:
        record = execute(config, sweep.out / config.run_id, group=sweep.name, progress=progress)
        log(_line(record))
        records.append(record)
    return records


def run_ray(sweep: Sweep, address: str | None = None, workers: int | None = None, log=print) -> list[dict]:
    """One Ray task per run, each asking for ``sweep.cpus``/``sweep.gpus``; results come back as they finish."""
    with ray_session(address, workers * sweep.cpus if workers else None, "or pass --engine local") as ray:
        task = ray.remote(num_cpus=sweep.cpus, num_gpus=sweep.gpus, max_retries=0)(execute)
        threads = max(1, int(sweep.cpus))
        pending = {task.remote(config, str(sweep.out / config.run_id), threads, sweep.name): config
                   for config in sweep.configs}
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


@contextmanager
def ray_session(address: str | None = None, num_cpus: float | None = None, alternative: str = ""):
    """Ray for the duration: the cluster at ``address``, or a local one with ``num_cpus`` (all, by default), shut down
    afterwards if this call started it; a Ray already running in the process is used as it is."""
    try:
        import ray
    except ImportError:
        raise ClpeftError(f"this needs Ray: pip install 'clpeft[ray]'{', ' + alternative if alternative else ''}") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(log_to_driver=False, **{k: v for k, v in kwargs.items() if v is not None})
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _line(record: dict) -> str:
    if record["status"] == "failed":
        return f"{record['run_id']}: FAILED {record['error_type']}: {record['error']}"
    if record["status"] == "skipped":
        return f"{record['run_id']}: finished before, skipped" + (f" ({record['health'].upper()})" if record.get("health") else "")
    line = f"{record['run_id']}: A_T={record['final_accuracy']:.3f} ({record['seconds']:.1f} s)"
    if record["status"] != "done":
        line += f" {record['status'].upper()}: " + "; ".join(record.get("reasons", []))
    return line


def run_sweep(sweep: Sweep, engine: str = "ray", address: str | None = None, workers: int | None = None,
              report: bool = True, log=print, progress: bool = False) -> dict:
    """Run every config of ``sweep`` on ``engine``, write ``OUT/sweep.json`` (atomically) and the report.

    The sweep holds its output directory's lock throughout: a second sweep into it fails at once."""
    if engine not in ENGINES:
        raise ClpeftError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
    rundir.preflight(sweep.out)
    with rundir.claimed(sweep.out):
        start = time.perf_counter()
        records = run_local(sweep, log, progress) if engine == "local" else run_ray(sweep, address, workers, log)
        order = {c.run_id: i for i, c in enumerate(sweep.configs)}
        records.sort(key=lambda r: order[r["run_id"]])
        counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
        summary = {"name": sweep.name, "engine": engine, "runs": len(records), **counts,
                   "wall_seconds": round(time.perf_counter() - start, 3), "records": records}
        atomic_write_json(sweep.out / "sweep.json", summary)
        if report and counts["failed"] < len(records):
            from clpeft.reports.report import build_report

            build_report([sweep.out], sweep.report, title=f"Sweep {sweep.name}", notes=sweep.description)
            summary["report"] = str(sweep.report / "index.md")
    return summary
