"""The results file: one tidy JSON per run (deterministic for a seed), CSVs of the matrix and the loss,
runtime apart.

``results.json`` is built from a typed :class:`RunResult`: what a seed determines (config, versions,
device, matrices, metrics, parameter counts, the training loss per epoch, whether the run learned);
wall times and peak memory vary run to run, so they go to ``runtime.json``. Method-specific figures
travel as generic data: ``views`` (extra named accuracy matrices), ``strategy_summary`` (facts) and
``report_metrics`` (scalars the report tabulates by name). Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from clpeft.errors import ClpeftError
from clpeft.utils.io import atomic_write_json, atomic_write_text, writing

SCHEMA_VERSION = 2
REQUIRED_KEYS = {"schema_version", "run_id", "config", "accuracy_matrix", "metrics"}
LOSS_RISE = 2.0  # a phase whose last epoch's mean loss is above LOSS_RISE × its first step's loss (and above a
# uniform guess's) diverged
LOSS_FALL = 0.9  # a phase whose last epoch's mean loss is below LOSS_FALL × its first step's loss learned


@dataclass
class RunResult:
    """Everything ``results.json`` holds; optional sections are left out of the file when empty."""

    run_id: str
    config_hash: str
    config: dict
    stream: dict
    versions: dict
    device: str
    accuracy_matrix: list
    accuracy_matrix_task_il: list
    accuracy_before_training: list
    test_samples: list
    metrics: dict
    parameters: dict
    health: dict
    training: list = field(default_factory=list)  # per (experience, phase, epoch): mean loss
    final_accuracy_by_eval_order: list | None = None
    distributed: dict | None = None
    task_inference_matrix: list | None = None
    strategy_summary: dict | None = None
    report_metrics: dict | None = None
    views: dict | None = None
    notes: list | None = None  # what the run did differently from what was asked (e.g. an empty phase skipped)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


LISTED = 5  # experiences (or phases) a health reason names before it counts the rest


def chance_threshold(num_classes: int, n_test: int) -> float:
    """Accuracy at or below which a run did not beat guessing: chance + 2 standard errors."""
    p = 1.0 / max(num_classes, 1)
    return p + 2.0 * math.sqrt(p * (1 - p) / max(n_test, 1))


def assess_health(final_accuracy: float, num_classes: int, n_test: int, training: list[dict],
                  measured: str = "final accuracy", learned: list[dict] | None = None) -> dict:
    """``{"status": "ok" | "not_learned" | "at_chance" | "diverged", "reasons": [...]}``, so that no run that
    failed to learn is averaged silently. Judged, in this order of precedence:

    - ``diverged``: some phase's loss ended above twice its first step's *and* above what a uniform guess over
      the phase's classes scores (ln k): training made the model worse than guessing. Each phase is judged
      against its own start, so a method whose second phase starts low and wobbles is not flagged.
    - ``not_learned``: some experience, right after it was learned, was at chance on its own classes
      (``learned``: ``{"experience", "accuracy", "classes", "samples"}`` per experience, the task-IL diagonal,
      so forgetting and class-IL bias do not count), or the final accuracy is at chance and no phase's loss fell.
    - ``at_chance``: the loss fell but the final accuracy is at chance (everything forgotten, or an evaluation
      that does not match training).

    ``measured`` names the accuracy judged, when it is not the one the results headline."""
    reasons, status = [], "ok"
    phases: dict = {}
    for entry in training:
        phases.setdefault((entry["experience"], entry["phase"]), []).append(entry)
    fell, rose = False, []
    for (experience, phase), entries in sorted(phases.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        start, end = entries[0].get("first_step_loss"), entries[-1]["loss"]
        if start is None or not math.isfinite(end):
            continue
        guess = math.log(entries[0]["classes"]) if entries[0].get("classes", 0) >= 2 else 0.0
        if start > 0 and end > LOSS_RISE * start and end > guess:
            rose.append(f"the loss rose from {start:.3g} to {end:.3g} in experience {experience} ({phase} phase)"
                        + (f", above the {guess:.3g} of a uniform guess" if guess else ""))
            status = "diverged"
        if end < LOSS_FALL * start:
            fell = True
    reasons += rose[:LISTED] + ([f"… and in {len(rose) - LISTED} more phases"] if len(rose) > LISTED else [])
    flat = "" if fell or not phases else " and no training phase lowered its loss"
    missed = [e for e in learned or [] if e["classes"] >= 2 and math.isfinite(e["accuracy"])
              and e["accuracy"] <= chance_threshold(e["classes"], e["samples"])]
    if missed:
        listed = ", ".join(f"{e['experience']} ({100 * e['accuracy']:.1f} % on {e['classes']} classes)"
                           for e in missed[:LISTED])
        if len(missed) > LISTED:  # a long stream's message stays one readable line
            listed += f" and {len(missed) - LISTED} more ({len(missed)} of {len(learned)})"
        reasons.append(f"right after it was learned, experience{'s' if len(missed) > 1 else ''} {listed} "
                       f"scored at chance on {'their' if len(missed) > 1 else 'its'} own classes{flat}")
        flat = ""
        if status == "ok":
            status = "not_learned"
    threshold = chance_threshold(num_classes, n_test)
    if final_accuracy <= threshold:
        reasons.append(f"{measured} {100 * final_accuracy:.1f} % is at chance ({100 / num_classes:.1f} % for "
                       f"{num_classes} classes; ≤ {100 * threshold:.1f} % counts as chance on {n_test} test samples)"
                       + flat)
        if status == "ok":
            status = "at_chance" if fell or not phases else "not_learned"
    return {"status": status, "reasons": reasons}


def learned_right_after(R_task: list, class_ranges: list, counts: list) -> list[dict]:
    """Each experience's accuracy on its own classes right after it was learned (the task-IL diagonal)."""
    return [{"experience": i, "accuracy": float(R_task[i][i]), "classes": b - a, "samples": int(counts[i])}
            for i, (a, b) in enumerate(class_ranges) if i < len(R_task) and i < len(R_task[i])]


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


def loss_csv(run_id: str, training: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run_id", "experience", "phase", "epoch", "steps", "loss"])
    for e in training:
        writer.writerow([run_id, e["experience"], e["phase"], e["epoch"], e["steps"], f"{e['loss']:.6g}"])
    return buf.getvalue()


def write_results(out_dir: str | Path, results: dict, runtime: dict) -> Path:
    out_dir = Path(out_dir)
    with writing(out_dir, "the results"):
        atomic_write_text(out_dir / "results.csv", matrix_csv(results["run_id"], results["accuracy_matrix"],
                                                              results["accuracy_matrix_task_il"], results["test_samples"]))
        atomic_write_text(out_dir / "loss.csv", loss_csv(results["run_id"], results.get("training", [])))
        atomic_write_json(out_dir / "runtime.json", runtime)
        # results.json last: its presence marks a complete run
        return atomic_write_json(out_dir / "results.json", results)


def check_shape(data: dict, path) -> None:
    """What a report computes from, checked before it is used: a hand-damaged or foreign file is named, not a
    traceback halfway through a report."""
    if data["schema_version"] != SCHEMA_VERSION:
        raise ClpeftError(f"{path} has schema_version {data['schema_version']!r}; this clpeft reads {SCHEMA_VERSION} "
                          "(re-run that experiment with this version)")
    R = data["accuracy_matrix"]
    ok = isinstance(R, list) and R and all(isinstance(row, list) and len(row) == len(R[0]) for row in R) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) for row in R for a in row)
    if not ok:
        raise ClpeftError(f"{path} has a damaged accuracy_matrix (rows of unequal length or non-numbers); "
                          "re-run that experiment")
    metrics = data["metrics"]
    bad = [k for k, v in (metrics.items() if isinstance(metrics, dict) else [])
           if not isinstance(v, (int, float, list)) or isinstance(v, bool)]
    if not isinstance(metrics, dict) or bad:
        raise ClpeftError(f"{path} has a damaged metric {bad[0] if bad else 'section'!r} (not a number); "
                          "re-run that experiment")


def read_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ClpeftError(f"{path} does not exist; point to a run directory or its results.json")
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ClpeftError(f"{path} is not valid JSON ({type(exc).__name__}); re-run that experiment") from None
    if not isinstance(data, dict):
        raise ClpeftError(f"{path} is not a clpeft results file (not a JSON object)")
    missing = REQUIRED_KEYS - set(data)
    if missing:
        raise ClpeftError(f"{path} is not a clpeft results file (missing {sorted(missing)[0]!r})")
    check_shape(data, path)
    runtime = path.parent / "runtime.json"
    if runtime.exists():
        try:  # wall times are a nicety: a damaged runtime.json must not hide the run's results
            data["runtime"] = json.loads(runtime.read_text())
            if not isinstance(data["runtime"], dict):
                raise ValueError
        except (ValueError, OSError):
            data["runtime"] = {}
            data["runtime_unreadable"] = str(runtime)
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
