"""The results file: one tidy JSON per run (deterministic for a seed), a CSV of the matrix, runtime apart.

``results.json`` holds what a seed determines (config, versions, device, matrices, metrics,
parameter counts); wall times and peak memory vary run to run, so they go to ``runtime.json``.
Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from importlib import metadata
from pathlib import Path

from clpeft.errors import ClpeftError
from clpeft.utils.io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
REQUIRED_KEYS = {"schema_version", "run_id", "config", "accuracy_matrix", "metrics"}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("clpeft", "torch", "torchvision", "timm", "avalanche-lib", "numpy", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def matrix_csv(run_id: str, R, R_task, counts) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run_id", "trained_upto", "eval_experience", "accuracy", "accuracy_task_il", "test_samples"])
    for i, row in enumerate(R):
        for j, acc in enumerate(row):
            ti = R_task[i][j]
            writer.writerow([run_id, i, j, f"{acc:.6f}", "" if math.isnan(ti) else f"{ti:.6f}", counts[j]])
    return buf.getvalue()


def write_results(out_dir: str | Path, results: dict, runtime: dict) -> Path:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.csv", matrix_csv(results["run_id"], results["accuracy_matrix"],
                                                          results["accuracy_matrix_task_il"], results["test_samples"]))
    atomic_write_json(out_dir / "runtime.json", runtime)
    # results.json last: its presence marks a complete run
    return atomic_write_json(out_dir / "results.json", results)


def read_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ClpeftError(f"{path} does not exist; point to a run directory or its results.json")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ClpeftError(f"{path} is not valid JSON; re-run that experiment") from exc
    missing = REQUIRED_KEYS - set(data)
    if missing:
        raise ClpeftError(f"{path} is not a clpeft results file (missing {sorted(missing)[0]!r})")
    runtime = path.parent / "runtime.json"
    if runtime.exists():
        data["runtime"] = json.loads(runtime.read_text())
    return data


def find_results(paths) -> list[Path]:
    """Results files under the given files or directories (searched recursively)."""
    found = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("results.json")))
        else:
            raise ClpeftError(f"{p} does not exist; give run directories or results.json files")
    if not found:
        raise ClpeftError(f"no results.json under {', '.join(map(str, paths))}; run `clpeft run` first")
    return found


def find_failures(paths) -> list[dict]:
    """Failure records (``failed.json``, written by sweeps) of runs that have no results file."""
    failures = []
    for p in map(Path, paths):
        if p.is_dir():
            for path in sorted(p.rglob("failed.json")):
                if not (path.parent / "results.json").exists():
                    try:
                        failures.append(json.loads(path.read_text()))
                    except json.JSONDecodeError:
                        failures.append({"run_id": path.parent.name, "error_type": "unreadable", "error": str(path)})
    return failures
