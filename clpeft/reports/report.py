"""Aggregate runs over seeds into tables (mean ± std) and plots, written as Markdown and HTML."""
from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from clpeft.evaluation.metrics import per_experience_forgetting
from clpeft.reports.results import find_failures, find_results, read_results
from clpeft.utils.io import atomic_write, atomic_write_text

COLUMNS = [
    ("final_accuracy", "A_T", 100), ("average_incremental_accuracy", "Ā", 100),
    ("forgetting_max", "F (max)", 100), ("forgetting_after_learning", "F (after-learning)", 100),
    ("backward_transfer", "BWT", 100),
]


def group_key(r: dict) -> tuple[str, str]:
    cfg = r["config"]
    method = cfg["strategy"] + (f"+{cfg['pet']}" if cfg.get("pet") else "")
    if cfg.get("options"):  # ablations of one method get their own rows
        method += " [" + ", ".join(f"{k}={v}" for k, v in sorted(cfg["options"].items())) + "]"
    order = (cfg.get("stream") or {}).get("eval_order", "iid")
    if order != "iid":  # batch composition changes what batch-level methods see
        method += f" @{order} batches"
    if cfg.get("amp", "off") != "off":  # precision changes the numbers: never averaged with fp32 runs
        method += f" ({cfg['amp']})"
    where = "" if cfg.get("device", "cpu") == "cpu" else f", {cfg['device']}"
    stream = f"{r['stream']['name']} ({len(r['accuracy_matrix'])} exp, {cfg['model']['backbone']}{where})"
    return stream, method


def task_il_metrics(runs: list[dict]) -> dict[str, list[float]]:
    """Per run: final task-IL accuracy and its max-forgetting, and (methods that infer the task) the
    share of test samples routed to their own experience and the last mask's overlap with earlier ones."""
    out: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        R = np.array(r["accuracy_matrix_task_il"], dtype=float)
        counts = np.array(r["test_samples"], dtype=float)
        out["final"].append(float(np.average(R[-1], weights=counts)))
        if len(R) > 1:
            out["forgetting_max"].append(float(np.mean(np.nanmax(R[:-1, :-1], axis=0) - R[-1, :-1])))
        if "task_inference_matrix" in r:
            out["task_inference"].append(r["metrics"]["final_task_inference"])
        overlap = r.get("strategy_summary", {}).get("mask_overlap")
        if overlap:
            out["mask_overlap_last"].append(overlap[-1])
    return out


def aggregate(results: list[dict]) -> dict:
    groups: dict = defaultdict(list)
    for r in results:
        groups[group_key(r)].append(r)
    table = {}
    for key, runs in sorted(groups.items()):
        seeds = sorted(r["config"]["seed"] for r in runs)
        R = np.array([r["accuracy_matrix"] for r in runs])
        row = {"seeds": seeds, "runs": runs, "R_mean": R.mean(0), "R_std": R.std(0)}
        for metric, _, _ in COLUMNS:
            vals = np.array([r["metrics"][metric] for r in runs])
            row[metric] = (vals.mean(), vals.std())
        curves = np.array([r["metrics"]["accuracy_after_each"] for r in runs])
        row["curve"] = (curves.mean(0), curves.std(0))
        row["forgetting_per_exp"] = np.array([per_experience_forgetting(r["accuracy_matrix"]) for r in runs]).mean(0)
        row["trainable"] = runs[0]["parameters"]["trainable"]
        if all("views" in r for r in runs):
            row["views"] = {name: {metric: (np.mean([r["views"][name]["metrics"][metric] for r in runs]),
                                            np.std([r["views"][name]["metrics"][metric] for r in runs]))
                                   for metric in ("final_accuracy", "average_incremental_accuracy", "forgetting_max")}
                            for name in runs[0]["views"]}
        if all("final_accuracy_by_eval_order" in r for r in runs):
            cells = defaultdict(list)
            for r in runs:
                for e in r["final_accuracy_by_eval_order"]:
                    cells[(e["eval_order"], e["tta"])].append(e["final_accuracy"])
            row["by_order"] = {key: (float(np.mean(v)), float(np.std(v))) for key, v in cells.items()}
            row["eval_batch_size"] = runs[0]["final_accuracy_by_eval_order"][0]["eval_batch_size"]
        row["task_il"] = {key: (float(np.mean(v)), float(np.std(v))) for key, v in task_il_metrics(runs).items()}
        times = [r.get("runtime", {}).get("train_seconds_total") for r in runs]
        row["train_s"] = float(np.mean(times)) if all(t is not None for t in times) else None
        table[key] = row
    return table


def _fmt(mean_std, scale) -> str:
    m, s = mean_std
    return f"{m * scale:.1f} ± {s * scale:.1f}"


def markdown_table(table: dict) -> str:
    lines = []
    for stream in sorted({k[0] for k in table}):
        lines += [f"### {stream}", "",
                  "| method | seeds | " + " | ".join(c[1] for c in COLUMNS) + " | trainable params | train s |",
                  "|---|---|" + "---|" * len(COLUMNS) + "---|---|"]
        for (s, method), row in table.items():
            if s != stream:
                continue
            cells = [_fmt(row[m], scale) for m, _, scale in COLUMNS]
            t = f"{row['train_s']:.1f}" if row["train_s"] is not None else "–"
            lines.append(f"| {method} | {len(row['seeds'])} | " + " | ".join(cells) + f" | {row['trainable']:,} | {t} |")
        lines.append("")
        with_views = [(method, row) for (s, method), row in table.items() if s == stream and row.get("views")]
        if with_views:
            lines += ["Each expert alone (the row above is their combination):", "",
                      "| method | expert | A_T | Ā | F (max) |", "|---|---|---|---|---|"]
            for method, row in with_views:
                for name, m in row["views"].items():
                    lines.append(f"| {method} | {name} | {_fmt(m['final_accuracy'], 100)} | "
                                 f"{_fmt(m['average_incremental_accuracy'], 100)} | {_fmt(m['forgetting_max'], 100)} |")
            lines.append("")
        rows = [(method, row) for (s, method), row in table.items() if s == stream]
        if any("task_inference" in row["task_il"] for _, row in rows):
            lines += ["Task-incremental (task id given) next to class-incremental; task inference = share of test "
                      "samples routed to their own experience; overlap = share of the last mask inside earlier masks:", "",
                      "| method | task-IL A_T | task-IL F (max) | class-IL A_T | task inference | overlap |",
                      "|---|---|---|---|---|---|"]
            for method, row in rows:
                ti = row["task_il"]
                cell = lambda key: _fmt(ti[key], 100) if key in ti else "–"  # noqa: E731
                lines.append(f"| {method} | {cell('final')} | {cell('forgetting_max')} | "
                             f"{_fmt(row['final_accuracy'], 100)} | {cell('task_inference')} | {cell('mask_overlap_last')} |")
            lines.append("")
        with_orders = [(method, row) for (s, method), row in table.items() if s == stream and row.get("by_order")]
        if with_orders:
            keys = [k for _, row in with_orders for k in row["by_order"]]
            orders = list(dict.fromkeys(o for o, _ in keys))
            ttas = list(dict.fromkeys(t for _, t in keys))
            lines += [f"A_T by test-batch order (batch {with_orders[0][1]['eval_batch_size']}), "
                      f"without and with test-time adaptation (same trained model and batches in a row):", "",
                      "| method | batch order | " + " | ".join(ttas) + " |",
                      "|---|---|" + "---|" * len(ttas)]
            for method, row in with_orders:
                for o in orders:
                    lines.append(f"| {method} | {o} | " + " | ".join(
                        _fmt(row["by_order"][(o, t)], 100) if (o, t) in row["by_order"] else "–" for t in ttas) + " |")
            lines.append("")
    return "\n".join(lines)


def _save_fig(fig, path: Path) -> None:
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, bbox_inches="tight", format="png"))


def plot_all(table: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    streams = sorted({k[0] for k in table})
    for si, stream in enumerate(streams):
        rows = [(m, r) for (s, m), r in table.items() if s == stream]
        tag = f"stream{si}"
        # accuracy after each experience
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, row in rows:
            mean, std = row["curve"]
            x = np.arange(1, len(mean) + 1)
            ax.plot(x, mean * 100, marker="o", label=method)
            ax.fill_between(x, (mean - std) * 100, (mean + std) * 100, alpha=0.15)
        ax.set(xlabel="experiences learned", ylabel="accuracy on all seen classes (%)", title=stream, ylim=(0, 100))
        ax.set_xticks(np.arange(1, len(rows[0][1]["curve"][0]) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        name = f"{tag}_accuracy_curve.png"
        _save_fig(fig, out / name)
        plt.close(fig)
        files.append(name)
        # accuracy-matrix heatmaps
        n = len(rows)
        cols = min(n, 3)
        fig, axes = plt.subplots(-(-n // cols), cols, figsize=(3.4 * cols, 3.1 * -(-n // cols)), squeeze=False)
        for ax, (method, row) in zip(axes.flat, rows):
            R = row["R_mean"] * 100
            im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
            for i in range(R.shape[0]):
                for j in range(R.shape[1]):
                    if j <= i:
                        ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if R[i, j] < 55 else "black")
            ax.set(title=method, xlabel="test experience j", ylabel="after training i")
            ax.set_xticks(range(R.shape[1]))
            ax.set_yticks(range(R.shape[0]))
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy (%)")
        fig.suptitle(f"R[i][j], mean over seeds — {stream}", fontsize=10)
        name = f"{tag}_accuracy_matrix.png"
        _save_fig(fig, out / name)
        plt.close(fig)
        files.append(name)
        # per-experience forgetting
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        width = 0.8 / max(1, n)
        for k, (method, row) in enumerate(rows):
            f = row["forgetting_per_exp"] * 100
            ax.bar(np.arange(len(f)) + k * width - 0.4 + width / 2, f, width, label=method)
        ax.set(xlabel="experience j (all but the last)", ylabel="forgetting, max − last (%)", title=stream)
        ax.axhline(0, color="black", lw=0.8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
        name = f"{tag}_forgetting.png"
        _save_fig(fig, out / name)
        plt.close(fig)
        files.append(name)
    return files


def build_report(paths, out_dir: str | Path, title: str = "clpeft report", notes: str = "") -> Path:
    out = Path(out_dir)
    results = [read_results(p) for p in find_results(paths)]
    table = aggregate(results)
    images = plot_all(table, out)
    versions = results[0].get("versions", {})
    devices = sorted({r.get("device", "?") for r in results})
    header = [f"# {title}", "",
              f"Plots: the PNG files beside this page (`clpeft report RUNS -o {out.as_posix()}` rewrites them from the runs; "
              "reports/ in the repository commits the tables only).", "", notes, "" if notes else "",
              f"{len(results)} runs; device: {', '.join(devices)}; torch {versions.get('torch')}, timm {versions.get('timm')}, "
              f"avalanche {versions.get('avalanche-lib')}.", "",
              "Metrics in %: A_T = accuracy on all classes after the last experience; Ā = mean of the accuracy after each "
              "experience; F (max) = mean over old experiences of best earlier accuracy − final; F (after-learning) = "
              "accuracy right after learning − final (Avalanche's); BWT = −F (after-learning). Mean ± std over seeds "
              "(each seed also draws the class order).", ""]
    failures = find_failures(paths)
    body = markdown_table(table) + failures_section(failures)
    figs = "\n".join(f"![{name}]({name})" for name in images)
    atomic_write_text(out / "index.md", "\n".join(header) + body + "\n" + figs + "\n")
    atomic_write_text(out / "index.html", render_html(title, "\n".join(header), table, images, failures))
    return out / "index.md"


def failures_section(failures: list[dict]) -> str:
    """Runs that raised: listed, never silently dropped from a table of means."""
    if not failures:
        return ""
    lines = ["", f"### Failed runs ({len(failures)}, not in the tables above)", "", "| run | error |", "|---|---|"]
    for f in failures:
        error = f"{f.get('error_type', '?')}: {f.get('error', '')}".replace("|", "\\|")
        lines.append(f"| {f.get('run_id', '?')} | {error} |")
    return "\n".join(lines) + "\n"


def render_html(title: str, header_md: str, table: dict, images: list[str], failures: list[dict] = ()) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}</style></head><body>"]
    for line in header_md.splitlines():
        if line.startswith("# "):
            parts.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            parts.append(f"<p>{html.escape(line)}</p>")
    for stream in sorted({k[0] for k in table}):
        parts.append(f"<h3>{html.escape(stream)}</h3><table><tr><th>method</th><th>seeds</th>"
                     + "".join(f"<th>{html.escape(c[1])}</th>" for c in COLUMNS) + "<th>trainable params</th></tr>")
        for (s, method), row in table.items():
            if s == stream:
                parts.append(f"<tr><td>{html.escape(method)}</td><td>{len(row['seeds'])}</td>"
                             + "".join(f"<td>{_fmt(row[m], sc)}</td>" for m, _, sc in COLUMNS)
                             + f"<td>{row['trainable']:,}</td></tr>")
        parts.append("</table>")
    if failures:
        parts.append(f"<h3>Failed runs ({len(failures)}, not in the tables above)</h3><ul>")
        parts += [f"<li>{html.escape(f.get('run_id', '?'))}: {html.escape(f.get('error_type', '?'))}: "
                  f"{html.escape(f.get('error', ''))}</li>" for f in failures]
        parts.append("</ul>")
    parts += [f"<p><img src='{html.escape(n)}' alt='{html.escape(n)}'></p>" for n in images]
    parts.append("</body></html>")
    return "\n".join(parts)
