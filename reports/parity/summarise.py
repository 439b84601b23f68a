"""Collect both sides of the prompt-pool parity into prompt_pool_runs.json and print the table of
reports/parity/prompt_pool.md: per seed A_T (sample-weighted final accuracy), mean ± std, Δ, last-task column.

    python reports/parity/summarise.py /tmp/parity_coda /tmp/parity_coda/clpeft2
"""
import json
import statistics
import sys
from pathlib import Path

METHODS = {"l2p": "l2p", "dualprompt": "dual", "coda_prompt": "coda"}


def table_rows(strategy: str, rows: dict) -> list[str]:
    """The method's rows of the table: each side's A_T per seed (0-4), mean ± std, the last task's mean, then Δ."""
    lines, means = [], {}
    for side, runs in rows.items():
        runs = {int(s): r for s, r in runs.items()}
        a = [100 * runs[s]["A_T"] if s in runs else None for s in range(5)]
        got = [v for v in a if v is not None]
        means[side] = statistics.mean(got)
        last = statistics.mean(100 * runs[s]["matrix"][-1][-1] for s in runs)
        cells = " | ".join("—" if v is None else f"{v:.1f}" for v in a)
        lines.append(f"| {strategy} | {side} | {cells} | {means[side]:.1f} ± {statistics.stdev(got):.1f} | {last:.1f} |")
    lines.append(f"| {strategy} | Δ clpeft − official | | | | | | {means['clpeft'] - means['official']:+.1f} | |")
    return lines


def main(official_dir: Path, clpeft_dir: Path) -> None:
    out = {}
    print("| method | side | " + " | ".join(f"seed {s}" for s in range(5)) + " | mean ± std | last task (mean) |")
    print("|---|---|" + "---|" * 5 + "---|---|")
    for strategy, short in METHODS.items():
        rows = {"official": {}, "clpeft": {}}
        for seed in range(5):
            o, c = official_dir / f"official_{short}_s{seed}.json", clpeft_dir / f"{strategy}-s{seed}" / "results.json"
            if o.exists():
                r = json.loads(o.read_text())
                rows["official"][seed] = {"A_T": r["final_accuracy"], "matrix": r["accuracy_matrix"]}
            if c.exists():
                r = json.loads(c.read_text())
                rows["clpeft"][seed] = {"A_T": r["metrics"]["final_accuracy"], "matrix": r["accuracy_matrix"]}
        out[strategy] = rows
        print("\n".join(table_rows(strategy, rows)))
    (Path(__file__).parent / "prompt_pool_runs.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
