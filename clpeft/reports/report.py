"""Aggregate runs over seeds into tables and figures: Markdown, HTML (the same tables), CSV, PNG/SVG/PDF.

Runs are grouped by their **whole configuration except the seed** (the class order follows the seed unless
the scenario fixes it), so runs that differ in any setting — a learning rate, an epoch count, a PET or
strategy option, the precision — are never averaged as if they were seeds. Row labels add the settings
that tell a method's rows apart, and a settings table lists every setting that differs between rows.
Distinct seeds are counted (a duplicate of a seed is listed, not averaged twice); runs that diverged are
flagged; a results file that cannot be read is listed, never silently dropped nor allowed to block the
others. Strategy-specific numbers arrive as generic data (views, ``report_metrics``); nothing here
knows a method's name.
"""
from __future__ import annotations

import csv
import html
import io
import json
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clpeft.errors import ClpeftError
from clpeft.evaluation.metrics import per_experience_forgetting
from clpeft.reports.results import find_failures, find_results, read_results
from clpeft.utils.io import atomic_write, atomic_write_text

COLUMNS = [
    ("final_accuracy", "A_T", 100), ("average_incremental_accuracy", "Ā", 100),
    ("forgetting_max", "F (max)", 100), ("forgetting_after_learning", "F (after-learning)", 100),
    ("backward_transfer", "BWT", 100),
]
#: settings that do not change what a run computes (or name the seed itself)
NOT_SETTINGS = ("seed", "loggers", "imports", "provenance")
TUNED_HERE = "tuned on this stream"
FIGURE_FORMATS = ("png", "svg", "pdf")


# ------------------------------------------------------------------------------------------------ runs
def flatten(config: dict, prefix: str = "") -> dict:
    """``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}`` (lists kept as values)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def settings_of(r: dict) -> dict:
    """A run's settings: its flattened configuration without the seed; the device reduced to its type."""
    flat = {k: v for k, v in flatten(r["config"]).items() if k.split(".")[0] not in NOT_SETTINGS}
    flat["device"] = str(flat.get("device", "cpu")).split(":")[0]
    return flat


def setting_key(r: dict) -> str:
    return json.dumps(settings_of(r), sort_keys=True, default=str)


def source_of(r: dict) -> str:
    """Where a run's settings came from: the scenario's own ("defaults"), a search on another stream ("tuned on X"),
    or a search on the very stream it reports (flagged: such numbers flatter the method)."""
    from clpeft.streams.stream import identity_of_results

    prov = r["config"].get("provenance")
    if not prov:
        return "defaults"
    if prov.get("tuning_stream") == identity_of_results(r):
        return TUNED_HERE
    return f"tuned on {prov['tuned_on']}"


def section_of(r: dict) -> str:
    cfg = r["config"]
    device = str(cfg.get("device", "cpu")).split(":")[0]
    where = "" if device == "cpu" else f", {device}"
    return f"{r['stream']['name']} ({len(r['accuracy_matrix'])} exp, {cfg['model']['backbone']}{where})"


def method_of(r: dict) -> str:
    cfg = r["config"]
    return cfg["strategy"] + (f"+{cfg['pet']}" if cfg.get("pet") else "") + (f" +{cfg['tta']}" if cfg.get("tta") else "")


def short(key: str) -> str:
    """Setting names as a row label shows them: options and PET settings by their own name."""
    for prefix in ("options.", "pet_settings.", "tta_settings."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


@dataclass
class Runs:
    results: list[dict]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)


def load_runs(paths) -> Runs:
    """Every readable results file under ``paths``; unreadable ones and sweep failures are collected apart."""
    runs = Runs(results=[])
    for path in find_results(paths):
        try:
            r = read_results(path)
            r["_path"] = str(path)
            runs.results.append(r)
        except ClpeftError as exc:
            runs.unreadable.append((str(path), str(exc)))
    runs.failures = find_failures(paths)
    if not runs.results:
        first = runs.unreadable[0][1] if runs.unreadable else "none found"
        more = f" (and {len(runs.unreadable) - 1} more unreadable)" if len(runs.unreadable) > 1 else ""
        raise ClpeftError(f"no readable results: {first}{more}")
    return runs


# ------------------------------------------------------------------------------------------ aggregation
def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std())


@dataclass
class Row:
    section: str
    method: str
    label: str
    runs: list
    settings: dict
    duplicates: list = field(default_factory=list)  # paths of runs of a seed already in the row
    source: str = "defaults"  # where the settings came from (source_of)

    @property
    def seeds(self) -> list[int]:
        return [r["config"]["seed"] for r in self.runs]

    def metric(self, name: str) -> tuple[float, float]:
        return _mean_std([r["metrics"][name] for r in self.runs])

    @property
    def unhealthy(self) -> list[dict]:
        """Runs marked diverged, not learned or at chance."""
        return [r for r in self.runs if r.get("health", {}).get("status", "ok") != "ok"]

    @property
    def R(self) -> np.ndarray:
        return np.array([r["accuracy_matrix"] for r in self.runs], dtype=float)

    @property
    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        c = np.array([r["metrics"]["accuracy_after_each"] for r in self.runs], dtype=float)
        return c.mean(0), c.std(0)

    @property
    def forgetting(self) -> tuple[np.ndarray, np.ndarray]:
        f = np.array([per_experience_forgetting(r["accuracy_matrix"]) for r in self.runs], dtype=float)
        return f.mean(0), f.std(0)

    @property
    def train_seconds(self) -> float | None:
        times = [r.get("runtime", {}).get("train_seconds_total") for r in self.runs]
        return float(np.mean(times)) if times and all(t is not None for t in times) else None


def aggregate(results: list[dict]) -> list[Row]:
    """One row per (section, whole configuration except the seed, where the settings came from); labels tell a
    method's variants apart."""
    groups: dict = defaultdict(list)
    for r in results:
        groups[(section_of(r), setting_key(r), source_of(r))].append(r)
    rows = []
    for (section, _, source), runs in groups.items():
        runs = sorted(runs, key=lambda r: (r["config"]["seed"], r.get("_path", "")))
        kept, duplicates, seen = [], [], set()
        for r in runs:
            if r["config"]["seed"] in seen:
                duplicates.append(r.get("_path", r["run_id"]))
            else:
                seen.add(r["config"]["seed"])
                kept.append(r)
        rows.append(Row(section, method_of(kept[0]), method_of(kept[0]), kept, settings_of(kept[0]), duplicates, source))
    by_family: dict = defaultdict(list)
    for row in rows:
        by_family[(row.section, row.method)].append(row)
    for family in by_family.values():
        if len(family) < 2:
            continue
        varying = varying_settings([row.settings for row in family])
        for row in family:
            parts = [f"{short(k)}={row.settings.get(k, '–')}" for k in varying]
            row.label = f"{row.method} [{', '.join(parts)}]" if parts else row.method
        if len({row.label for row in family}) < len(family):  # equal settings, different origins
            for row in family:
                row.label += f" ({row.source})"
    return sorted(rows, key=lambda row: (row.section, row.label))


def varying_settings(settings: list[dict]) -> list[str]:
    """Keys set in at least two of ``settings`` with different values there (another method's own options,
    present in one row only, do not count)."""
    keys = sorted({k for s in settings for k in s})
    out = []
    for key in keys:
        present = [json.dumps(s[key], sort_keys=True, default=str) for s in settings if key in s]
        if len(present) >= 2 and len(set(present)) > 1:
            out.append(key)
    return out


# ----------------------------------------------------------------------------------------------- tables
@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]


def _fmt(mean_std, scale=100) -> str:
    m, s = mean_std
    return f"{m * scale:.1f} ± {s * scale:.1f}"


def section_tables(rows: list[Row]) -> list[Table]:
    """Every table of one section, the same for Markdown and HTML."""
    tables = []
    main = []
    for row in rows:
        bad = row.unhealthy
        flag = (f" ⚠ {len(bad)}/{len(row.runs)} " + "/".join(sorted({r['health']['status'].replace('_', ' ') for r in bad}))
                if bad else "")
        t = row.train_seconds
        main.append([row.label + flag, str(len(row.runs))] + [_fmt(row.metric(m), sc) for m, _, sc in COLUMNS]
                    + [f"{row.runs[0]['parameters']['trainable']:,}", f"{t:.1f}" if t is not None else "–"])
    header = ["method", "seeds"] + [c[1] for c in COLUMNS] + ["trainable params", "train s"]
    if any(row.source != "defaults" for row in rows):  # a tuning protocol is involved: say where settings came from
        header.append("settings from")
        for cells, row in zip(main, rows):
            cells.append(f"⚠ {row.source}" if row.source == TUNED_HERE else row.source)
    tables.append(Table("", header, main))

    view_rows = []
    for row in rows:
        if all("views" in r for r in row.runs):
            for name in row.runs[0]["views"]:
                vals = {m: _mean_std([r["views"][name]["metrics"][m] for r in row.runs])
                        for m in ("final_accuracy", "average_incremental_accuracy", "forgetting_max")}
                view_rows.append([row.label, name] + [_fmt(v) for v in vals.values()])
    if view_rows:
        tables.append(Table("Each view alone (the method's row above is their combination):",
                            ["method", "view", "A_T", "Ā", "F (max)"], view_rows))

    ti_rows = []
    for row in rows:
        if not any("task_inference_matrix" in r for r in row.runs):
            continue
        finals, forgets, routed = [], [], []
        for r in row.runs:
            R = np.array(r["accuracy_matrix_task_il"], dtype=float)
            finals.append(float(np.average(R[-1], weights=np.array(r["test_samples"], dtype=float))))
            if len(R) > 1:
                forgets.append(float(np.mean(np.nanmax(R[:-1, :-1], axis=0) - R[-1, :-1])))
            if "final_task_inference" in r["metrics"]:
                routed.append(r["metrics"]["final_task_inference"])
        ti_rows.append([row.label, _fmt(_mean_std(finals)), _fmt(_mean_std(forgets)) if forgets else "–",
                        _fmt(row.metric("final_accuracy")), _fmt(_mean_std(routed)) if routed else "–"])
    if ti_rows:
        tables.append(Table("Task-incremental (task id given) next to class-incremental; task inference = share of "
                            "test samples routed to their own experience:",
                            ["method", "task-IL A_T", "task-IL F (max)", "class-IL A_T", "task inference"], ti_rows))

    names = sorted({k for row in rows for r in row.runs for k in (r.get("report_metrics") or {})})
    if names:
        extra = []
        for row in rows:
            cells = []
            for name in names:
                vals = [r["report_metrics"][name] for r in row.runs if name in (r.get("report_metrics") or {})]
                cells.append(_fmt(_mean_std(vals)) if vals else "–")
            if any(c != "–" for c in cells):
                extra.append([row.label] + cells)
        tables.append(Table("Method-specific measures (%):", ["method"] + names, extra))

    with_orders = [row for row in rows if all("final_accuracy_by_eval_order" in r for r in row.runs)]
    if with_orders:
        cells = defaultdict(list)
        for row in with_orders:
            for r in row.runs:
                for e in r["final_accuracy_by_eval_order"]:
                    cells[(row.label, e["eval_order"], e["tta"])].append(e["final_accuracy"])
        orders = list(dict.fromkeys(k[1] for k in cells))
        ttas = list(dict.fromkeys(k[2] for k in cells))
        batch = with_orders[0].runs[0]["final_accuracy_by_eval_order"][0]["eval_batch_size"]
        body = [[row.label, o] + [_fmt(_mean_std(cells[(row.label, o, t)])) if cells.get((row.label, o, t)) else "–"
                                  for t in ttas] for row in with_orders for o in orders]
        tables.append(Table(f"A_T by test-batch order (batch {batch}), without and with test-time adaptation (same "
                            "trained model and batches in a row):", ["method", "batch order"] + ttas, body))

    varying = varying_settings([row.settings for row in rows])
    varying = [k for k in varying if k not in ("strategy", "pet", "tta")]
    if varying and len(rows) > 1:
        tables.append(Table("Settings that differ between rows:", ["method"] + varying,
                            [[row.label] + [_value(row.settings.get(k, "–")) for k in varying] for row in rows]))
    return tables


def _value(v) -> str:
    return json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)


def notes_tables(rows: list[Row], runs: Runs) -> list[Table]:
    tables = []
    unhealthy = [(row.label, r) for row in rows for r in row.unhealthy]
    if unhealthy:
        tables.append(Table(f"Runs marked diverged, not learned or at chance ({len(unhealthy)}; included above and flagged ⚠):",
                            ["method", "seed", "status", "why"],
                            [[label, str(r["config"]["seed"]), r["health"]["status"], "; ".join(r["health"]["reasons"])]
                             for label, r in unhealthy]))
    here = [row for row in rows if row.source == TUNED_HERE]
    if here:
        tables.append(Table(f"Rows whose settings were tuned on the stream they report ({len(here)}; flagged ⚠ above: "
                            "these numbers flatter the method — report on a stream the search never saw):",
                            ["method", "tuned on", "trials", "metric"],
                            [[row.label, row.runs[0]["config"]["provenance"]["tuned_on"],
                              str(row.runs[0]["config"]["provenance"].get("trials", "–")),
                              row.runs[0]["config"]["provenance"].get("metric", "–")] for row in here]))
    duplicates = [(row.label, p) for row in rows for p in row.duplicates]
    if duplicates:
        tables.append(Table("Duplicate runs of a seed already counted (left out of the means):", ["method", "file"],
                            [[label, p] for label, p in duplicates]))
    if runs.failures:
        tables.append(Table(f"Failed runs ({len(runs.failures)}, not in the tables above):", ["run", "error"],
                            [[f.get("run_id", "?"), f"{f.get('error_type', '?')}: {f.get('error', '')}"]
                             for f in runs.failures]))
    if runs.unreadable:
        tables.append(Table(f"Unreadable results ({len(runs.unreadable)}, not in the tables above):", ["file", "problem"],
                            [[p, why] for p, why in runs.unreadable]))
    return tables


def markdown(tables: list[Table]) -> str:
    lines = []
    for t in tables:
        if t.caption:
            lines += [t.caption, ""]
        lines.append("| " + " | ".join(t.header) + " |")
        lines.append("|" + "---|" * len(t.header))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t.rows]
        lines.append("")
    return "\n".join(lines)


def html_tables(tables: list[Table]) -> str:
    parts = []
    for t in tables:
        if t.caption:
            parts.append(f"<p>{html.escape(t.caption)}</p>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows]
        parts.append("</table>")
    return "\n".join(parts)


# -------------------------------------------------------------------------------------------- runs.csv
def runs_csv(results: list[dict]) -> str:
    """One row per run: file, run id, every setting, seed, every scalar metric (for pandas)."""
    setting_keys = sorted({k for r in results for k in settings_of(r)})
    metric_keys = sorted({k for r in results for k, v in r["metrics"].items() if isinstance(v, (int, float))})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "run_id", "method", "seed", "health"] + setting_keys + metric_keys + ["train_seconds"])
    for r in sorted(results, key=lambda r: (section_of(r), method_of(r), r["config"]["seed"], r["run_id"])):
        s = settings_of(r)
        writer.writerow([r.get("_path", ""), r["run_id"], method_of(r), r["config"]["seed"],
                         r.get("health", {}).get("status", "")]
                        + [_value(s[k]) if k in s else "" for k in setting_keys]
                        + [r["metrics"].get(k, "") for k in metric_keys]
                        + [r.get("runtime", {}).get("train_seconds_total", "")])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- figures
#: streams longer than this get a few integer ticks and unmarked curves (one tick per experience stops being readable)
LONG_STREAM = 20
MARKERS = ("o", "s", "^", "D", "v", "P")
HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def colours(labels: list[str]) -> dict:
    """One style per method label, the same in every figure of the report: a colour, and beyond 20 labels also
    a marker (curves) and a hatch (bars), so no two methods look alike."""
    import matplotlib

    unique = sorted(set(labels))
    cmap = matplotlib.colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {label: {"color": cmap(i % cmap.N), "marker": MARKERS[(i // cmap.N) % len(MARKERS)],
                    "hatch": HATCHES[(i // cmap.N) % len(HATCHES)]} for i, label in enumerate(unique)}


def _save(fig, out: Path, stem: str) -> list[str]:
    names = []
    for fmt in FIGURE_FORMATS:
        name = f"{stem}.{fmt}"
        atomic_write(out / name, lambda p, fmt=fmt: fig.savefig(p, dpi=150, bbox_inches="tight", format=fmt))
        names.append(name)
    return names


def _legend(fig, ax, n: int) -> None:
    if n > 6:  # many methods: legend below the axes, never over the curves
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    else:
        ax.legend(fontsize=8)


def plot_section(rows: list[Row], out: Path, tag: str, palette: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    files = []
    section = rows[0].section
    T = len(rows[0].curve[0])
    long = T > LONG_STREAM  # one tick per experience stops being readable: a few integer ticks, no markers

    def ticks(axis, positions, labels=None):
        if long:
            axis.set_major_locator(MaxNLocator(nbins=10, integer=True))
        else:
            axis.set_ticks(positions, labels)
    # accuracy after each experience, mean ± std band over seeds
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for row in rows:
        mean, std = row.curve
        x = np.arange(1, len(mean) + 1)
        style = palette[row.label]
        ax.plot(x, mean * 100, marker=None if long else style["marker"], label=row.label, color=style["color"])
        ax.fill_between(x, (mean - std) * 100, (mean + std) * 100, alpha=0.15, color=style["color"])
    ax.set(xlabel="experiences learned", ylabel="accuracy on all seen classes (%)", title=section, ylim=(0, 100))
    ticks(ax.xaxis, np.arange(1, T + 1))
    ax.grid(alpha=0.3)
    _legend(fig, ax, len(rows))
    files += _save(fig, out, f"{tag}_accuracy_curve")
    plt.close(fig)

    # accuracy-matrix heatmaps, one panel per method
    n = len(rows)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.9 * cols, 3.7 * nrows), squeeze=False, layout="constrained")
    im = None
    for ax, row in zip(axes.flat, rows):
        R = row.R.mean(0) * 100
        im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        if R.shape[0] <= 12:
            for i in range(R.shape[0]):
                for j in range(i + 1):
                    ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if R[i, j] < 55 else "black")
        ax.set_title("\n".join(textwrap.wrap(row.label, 36)[:3]), fontsize=7)
        ax.set_xlabel("test experience j", fontsize=8)
        ax.set_ylabel("after training i", fontsize=8)
        ticks(ax.xaxis, range(R.shape[1]))
        ticks(ax.yaxis, range(R.shape[0]))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy (%)")
    fig.suptitle(f"R[i][j], mean over seeds — {section}", fontsize=10)
    files += _save(fig, out, f"{tag}_accuracy_matrix")
    plt.close(fig)

    # per-experience forgetting with error bars over seeds
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    width = 0.8 / max(1, n)
    for k, row in enumerate(rows):
        mean, std = row.forgetting
        x = np.arange(len(mean)) + k * width - 0.4 + width / 2
        ax.bar(x, mean * 100, width, yerr=std * 100, capsize=2, label=row.label, color=palette[row.label]["color"],
               hatch=palette[row.label]["hatch"], error_kw={"elinewidth": 0.8})
    ax.set(xlabel="experience j (all but the last)", ylabel="forgetting, max − last (%)", title=section)
    ax.set_xticks(np.arange(max(T - 1, 1)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0, color="black", lw=0.8)
    ax.grid(alpha=0.3, axis="y")
    _legend(fig, ax, n)
    files += _save(fig, out, f"{tag}_forgetting")
    plt.close(fig)

    # training loss per epoch (mean over seeds); experience e spans [e, e + 1) whatever its epoch count
    with_loss = [row for row in rows if all(r.get("training") for r in row.runs)]
    if with_loss:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        for row in with_loss:
            curves = [[e["loss"] for e in r["training"]] for r in row.runs]
            length = min(map(len, curves))
            mean = np.mean([c[:length] for c in curves], axis=0)
            std = np.std([c[:length] for c in curves], axis=0)
            entries = row.runs[0]["training"][:length]
            per_exp, seen, x = Counter(e["experience"] for e in entries), Counter(), []
            for e in entries:  # the k-th of an experience's n epochs sits at experience + (k + 0.5) / n
                x.append(e["experience"] + (seen[e["experience"]] + 0.5) / per_exp[e["experience"]])
                seen[e["experience"]] += 1
            style = palette[row.label]
            ax.plot(x, mean, label=row.label, color=style["color"], lw=1.2, marker=None if long else style["marker"],
                    markersize=2.5)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=style["color"])
        for b in range(1, T if not long else 0):
            ax.axvline(b, color="grey", lw=0.5, ls=":")
        ax.set(xlabel="experience (its epochs spread across it)", ylabel="mean training loss", title=section)
        ticks(ax.xaxis, np.arange(T) + 0.5, [str(i) for i in range(T)])
        ax.grid(alpha=0.3)
        _legend(fig, ax, len(with_loss))
        files += _save(fig, out, f"{tag}_loss")
        plt.close(fig)
    return files


# ---------------------------------------------------------------------------------------------- report
HEADER = ("Metrics in %: A_T = accuracy on all classes after the last experience; Ā = mean of the accuracy after each "
          "experience; F (max) = mean over old experiences of best earlier accuracy − final; F (after-learning) = "
          "accuracy right after learning − final (Avalanche's); BWT = −F (after-learning). Mean ± std over distinct "
          "seeds (each seed also draws the class order unless the scenario fixes it). A row groups runs whose "
          "settings are all equal but the seed.")


def build_report(paths, out_dir: str | Path, title: str = "clpeft report", notes: str = "") -> Path:
    out = Path(out_dir)
    runs = load_runs(paths)
    rows = aggregate(runs.results)
    palette = colours([row.label for row in rows])
    sections = sorted({row.section for row in rows})
    versions = runs.results[0].get("versions", {})
    devices = sorted({r.get("device", "?") for r in runs.results})
    header = [f"{len(runs.results)} runs; device: {', '.join(devices)}; torch {versions.get('torch')}, "
              f"timm {versions.get('timm')}, avalanche {versions.get('avalanche-lib')}.", HEADER,
              f"Figures: PNG, SVG and PDF beside this page (`clpeft report RUNS -o {out.as_posix()}` rewrites them "
              "from the runs); runs.csv has one row per run."]
    md = [f"# {title}", ""] + ([notes, ""] if notes else []) + [line for h in header for line in (h, "")]
    body_html = []
    for si, section in enumerate(sections):
        section_rows = [row for row in rows if row.section == section]
        tables = section_tables(section_rows)
        figures = plot_section(section_rows, out, f"stream{si}", palette)
        pngs = [f for f in figures if f.endswith(".png")]
        md += [f"## {section}", "", markdown(tables)] + [f"![{f}]({f})" for f in pngs] + [""]
        body_html.append(f"<h2>{html.escape(section)}</h2>" + html_tables(tables)
                         + "".join(f"<p><img src='{html.escape(f)}' alt='{html.escape(f)}'></p>" for f in pngs))
    extra = notes_tables(rows, runs)
    if extra:
        md += ["## Notes on the runs", "", markdown(extra)]
        body_html.append("<h2>Notes on the runs</h2>" + html_tables(extra))
    atomic_write_text(out / "index.md", "\n".join(md).rstrip() + "\n")
    atomic_write_text(out / "runs.csv", runs_csv(runs.results))
    page = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
            "margin-bottom:1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>"] + ([f"<p>{html.escape(notes)}</p>"] if notes else []) \
        + [f"<p>{html.escape(h)}</p>" for h in header] + body_html + ["</body></html>"]
    atomic_write_text(out / "index.html", "\n".join(page) + "\n")
    return out / "index.md"
