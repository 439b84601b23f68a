"""How a method's state, memory and time grow over a long stream: the `long_synthetic` scenario (200 synthetic classes,
100 experiences of 2 by default), one run per method, measured after every experience.

Per experience: the bytes a checkpoint's state takes (the model's state dict and the method's kept attributes,
serialised as a checkpoint serialises them) and its elements, the process's peak resident memory so far (CPU; on
CUDA the peak allocated; each method runs in a process of its own), the training time per optimizer step and the
evaluation time per test sample (the run's own timings, `runtime.json`). Writes one JSON per method under --out and
prints the values at a few experience counts.

    OMP_NUM_THREADS=1 python benchmarks/long_stream_cost.py --methods inflora sd_lora jare hide_prompt finetune \
        [--experiences 100] [--out reports/long_streams] [--set train.bank_budget=10 --label inflora+budget10]
    python benchmarks/long_stream_cost.py --table     # the markdown table of the JSON files in --out
    python benchmarks/long_stream_cost.py --figure    # memory and evaluation time against experiences, one line each
    # big backbones: state and memory of the first N experiences, and their table (`make long-streams` has ViT-B/16)
    python benchmarks/long_stream_cost.py --methods inflora --stop-after 5 --out DIR --set model.backbone=...
    python benchmarks/long_stream_cost.py --growth reports/long_streams --out DIR

With the scenario's `stream.eval_unseen: false` an evaluation runs only the test experiences seen so far, so the
evaluation time per sample divides by those samples.
"""
import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from clpeft.config import load_scenario, resolve
from clpeft.run import run


def state_of(strategy) -> dict:
    return {"model": strategy.model.state_dict(), "strategy": strategy.resume_state()}


def serialised_bytes(obj) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def elements(obj) -> int:
    if torch.is_tensor(obj):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(elements(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(elements(v) for v in obj)
    return 0


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Stopped(Exception):
    """Raised by the probe after --stop-after experiences: the run ends there on purpose."""


def measure(method: str, experiences: int, device: str, out: Path, settings: dict | None = None,
            label: str | None = None, stop_after: int | None = None) -> dict:
    from clpeft.config import split_dotted

    scenario = load_scenario("long_synthetic")
    named, overrides = split_dotted(dict(settings or {}), "--set")
    if named:
        raise SystemExit(f"--set {sorted(named)[0]}: use a dotted key (train.bank_budget, stream.eval_unseen, ...)")
    overrides.setdefault("stream", {})["n_experiences"] = experiences
    config = resolve(scenario, strategy=method, seed=0, device=device, overrides=overrides)
    rows = []

    def probe(i, strategy, stream):
        state = state_of(strategy)
        rows.append({"experience": i, "state_bytes": serialised_bytes(state),
                     "state_elements": elements(state), "peak_memory_mb": peak_memory_mb(device),
                     "steps": sum(e["steps"] for e in strategy.training_log if e["experience"] == i)})
        if stop_after is not None and i + 1 >= stop_after:
            raise _Stopped

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results = run(config, out_dir=Path(tmp) / method, after_experience=probe)
        except _Stopped:  # state and memory only: the run's own timings are written at its end
            return stopped_record(out, label or method, method, settings, experiences, config, device, rows,
                                  time.perf_counter() - began)
        runtime = json.loads((Path(tmp) / method / "runtime.json").read_text())
    counts, ranges = results["test_samples"], results["stream"]["class_ranges"]
    for row, train_s, eval_s in zip(rows, runtime["train_seconds_per_experience"],
                                    runtime["eval_seconds_per_experience"]):
        seen = ranges[row["experience"]][1]
        row["test_samples_evaluated"] = sum(c for c, (start, _) in zip(counts, ranges)
                                            if config.stream.eval_unseen or start < seen)
        row["train_ms_per_step"] = 1e3 * train_s / max(row["steps"], 1)
        row["eval_ms_per_sample"] = 1e3 * eval_s / row["test_samples_evaluated"]
    label = label or method
    record = {"method": label, "strategy": method, "settings": settings or {}, "experiences": experiences,
              "epochs": config.train.epochs, "eval_unseen": config.stream.eval_unseen, "device": device,
              "threads": torch.get_num_threads(), "wall_seconds": time.perf_counter() - began,
              "status": results["health"]["status"], "health_reasons": results["health"].get("reasons"),
              "final_accuracy": results["metrics"]["final_accuracy"],
              "strategy_summary": results.get("strategy_summary"), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}_{experiences}.json").write_text(json.dumps(record, indent=1))
    return record


def stopped_record(out: Path, label: str, method: str, settings, experiences: int, config, device: str, rows: list,
                   wall: float) -> dict:
    """The rows of a run stopped after its first experiences (``--stop-after``), with the backbone it ran."""
    record = {"method": label, "strategy": method, "settings": settings or {}, "experiences": experiences,
              "stopped_after": len(rows), "backbone": config.model.backbone, "backbone_kwargs": config.model.kwargs,
              "epochs": config.train.epochs, "device": device, "threads": torch.get_num_threads(),
              "wall_seconds": wall, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{label}_{experiences}_first{len(rows)}.json").write_text(json.dumps(record, indent=1))
    return record


def growth_table(folder: Path, reference: Path | None = None) -> str:
    """Runs stopped after their first experiences (``--stop-after``): state at the first and last, growth per
    experience, and the straight line from them to the stream's end. ``reference``: the folder of full runs on the
    bundled ViT, whose measured end is set beside the same straight line drawn from their own first rows, so that the
    reader sees where growth is not linear."""
    lines = ["| method | state MB @1 | @n (n) | growth MB per experience | straight line to @100 | bundled ViT: straight "
             "line from its first n → measured @100 |", "|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*_first*.json")):
        r = json.loads(path.read_text())
        rows, end = r["rows"], r["experiences"]
        n = len(rows)
        first, last = rows[0]["state_bytes"] / 1e6, rows[-1]["state_bytes"] / 1e6
        slope = (last - first) / max(n - 1, 1)
        check = "—"
        full = reference / f"{r['method']}_{end}.json" if reference else None
        if full is not None and full.exists():
            tiny = json.loads(full.read_text())["rows"]
            t_first, t_n = tiny[0]["state_bytes"] / 1e6, tiny[n - 1]["state_bytes"] / 1e6
            line = t_first + (t_n - t_first) / max(n - 1, 1) * (end - 1)
            check = f"{line:.2f} → {tiny[end - 1]['state_bytes'] / 1e6:.2f}"
        lines.append(f"| {r['method']} | {first:.1f} | {last:.1f} ({n}) | {slope:.3f} | {first + slope * (end - 1):.1f} "
                     f"| {check} |")
    return "\n".join(lines)


def table(folder: Path, experiences: int) -> str:
    """A markdown table from the JSON files in ``folder``: each method at 1, 10, 50 and ``experiences``; times from
    experience 10 on (the first evaluations hold a handful of samples, so fixed costs dominate them)."""
    marks = sorted({m for m in (1, 10, 50, experiences) if m <= experiences})
    last = marks[-1]
    lines = ["| method | status | " + " | ".join(f"state MB @{m}" for m in marks) + f" | peak RSS MB @1 → @{last}"
             + f" | train ms/step @10 → @{last} | eval ms/sample @10 → @{last} | run s |",
             "|---" * (len(marks) + 6) + "|"]
    for path in sorted(folder.glob(f"*_{experiences}.json")):  # full runs (stopped ones end in _firstN)
        r = json.loads(path.read_text())
        rows = {row["experience"] + 1: row for row in r["rows"]}
        first, tenth, end = rows[1], rows[min(10, last)], rows[last]
        lines.append(f"| {r['method']} | {r['status']} | " + " | ".join(f"{rows[m]['state_bytes'] / 1e6:.2f}" for m in marks)
                     + f" | {first['peak_memory_mb']:.0f} → {end['peak_memory_mb']:.0f}"
                     + f" | {tenth['train_ms_per_step']:.0f} → {end['train_ms_per_step']:.0f}"
                     + f" | {tenth['eval_ms_per_sample']:.2f} → {end['eval_ms_per_sample']:.2f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def figure(folder: Path, out: Path) -> list[Path]:
    """State size, peak memory and evaluation time per sample against experiences learned, one line per method in
    ``folder`` (its longest run; from experience 2: the first evaluation holds 10 samples, so fixed costs dominate
    it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if "_first" not in p.stem]
    longest = {}
    for r in records:  # one line per method: its longest run (a 50-experience run beside its 100 adds nothing)
        longest[r["method"]] = max(longest.get(r["method"], 0), r["experiences"])
    records = [r for r in records if r["experiences"] == longest[r["method"]]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), layout="constrained")
    lengths = sorted({r["experiences"] for r in records})
    colours = plt.get_cmap("tab20").colors
    for i, r in enumerate(records):
        x = [row["experience"] + 1 for row in r["rows"]][1:]  # the first evaluation holds 10 samples: fixed costs
        rows = r["rows"][1:]
        label = r["method"] + (f" ({r['experiences']} × {200 // r['experiences']})" if len(lengths) > 1 else "")
        style = {"ls": "--" if r.get("settings") else "-", "lw": 1.4, "color": colours[(2 * i) % 20 + (2 * i) // 20]}
        axes[0].plot(x, [row["state_bytes"] / 1e6 for row in rows], label=label, **style)
        axes[1].plot(x, [row["peak_memory_mb"] for row in rows], label=label, **style)
        axes[2].plot(x, [row["eval_ms_per_sample"] for row in rows], label=label, **style)
    axes[0].set(xlabel="experiences learned", ylabel="checkpoint state (MB)", title="state a checkpoint holds")
    axes[1].set(xlabel="experiences learned", ylabel="peak memory (MB)", title="peak resident memory of the process")
    axes[2].set(xlabel="experiences learned", ylabel="evaluation ms per test sample", title="evaluation cost")
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax, key in ((axes[0], "state_bytes"), (axes[2], "eval_ms_per_sample")):
        values = [row[key] for r in records for row in r["rows"][1:]]
        if values and max(values) > 20 * min(values):  # a mask per experience, or a pass per instance: log scale
            ax.set_yscale("log")
    axes[2].legend(fontsize=7, loc="upper left", ncol=2)
    threads = sorted({r["threads"] for r in records})
    shape = (f"{lengths[0]} experiences of {200 // lengths[0]} classes" if len(lengths) == 1
             else "experiences × classes each")
    fig.suptitle(f"long_synthetic ({shape}), {'/'.join(map(str, threads))} thread(s), "
                 f"{records[0]['device'] if records else ''}", fontsize=10)
    written = []
    for fmt in ("png", "svg"):
        path = out.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help="print the markdown table of the JSON files in --out and stop")
    p.add_argument("--figure", action="store_true", help="draw --out/cost.png and .svg from the JSON files and stop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a dotted setting for every method's run (e.g. train.bank_budget=10); YAML values")
    p.add_argument("--label", help="name of the line and the file (default: the method)")
    p.add_argument("--methods", nargs="+", default=["inflora", "sd_lora", "jare", "hide_prompt", "finetune"])
    p.add_argument("--experiences", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop each run after its first N experiences and keep state and memory only (for big "
                        "backbones, e.g. --set model.backbone=vit_base_patch16_224; --growth prints their table)")
    p.add_argument("--growth", metavar="REFERENCE", nargs="?", const="reports/long_streams",
                   help="print the table of the stopped runs in --out, beside the full runs in REFERENCE, and stop")
    p.add_argument("--out", default="reports/long_streams")
    args = p.parse_args()
    if args.table:
        print(table(Path(args.out), args.experiences))
        return
    if args.growth:
        print(growth_table(Path(args.out), Path(args.growth)))
        return
    if args.figure:
        print("\n".join(map(str, figure(Path(args.out), Path(args.out) / "cost"))))
        return
    from clpeft.cli import parse_pairs

    settings = parse_pairs(args.set, "--set", "train.bank_budget=10")
    if args.label and len(args.methods) > 1:
        raise SystemExit("--label names one method's line; run one method at a time with it")
    if len(args.methods) > 1:  # one process per method: peak memory is a process's
        print(f"{torch.get_num_threads()} threads, device {args.device}, long_synthetic with {args.experiences} "
              "experiences", flush=True)
        for method in args.methods:
            subprocess.run([sys.executable, __file__, "--methods", method, "--experiences", str(args.experiences),
                            "--device", args.device, "--out", args.out] + [f"--set={kv}" for kv in args.set]
                           + ([f"--stop-after={args.stop_after}"] if args.stop_after else []), check=True)
        return
    marks = sorted({1, 10, args.experiences // 4, args.experiences // 2, args.experiences} - {0})
    for method in args.methods:
        r = measure(method, args.experiences, args.device, Path(args.out), settings, args.label, args.stop_after)
        if "stopped_after" in r:
            for row in r["rows"]:
                print(f"{r['method']:12s} after {row['experience'] + 1:3d}: state {row['state_bytes'] / 1e6:8.2f} MB "
                      f"({row['state_elements']:>10,d} elements), peak RSS {row['peak_memory_mb']:7.0f} MB", flush=True)
            print(f"{r['method']:12s} stopped after {r['stopped_after']} ({r['wall_seconds']:.0f} s)", flush=True)
            continue
        for row in r["rows"]:
            if row["experience"] + 1 in marks:
                print(f"{r['method']:12s} after {row['experience'] + 1:3d}: state {row['state_bytes'] / 1e6:8.2f} MB "
                      f"({row['state_elements']:>10,d} elements), peak RSS {row['peak_memory_mb']:7.0f} MB, "
                      f"train {row['train_ms_per_step']:7.1f} ms/step, eval {row['eval_ms_per_sample']:6.2f} ms/sample",
                      flush=True)
        print(f"{r['method']:12s} {r['wall_seconds']:.0f} s in all, status {r['status']}, A_T {100 * r['final_accuracy']:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
