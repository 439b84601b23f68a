"""Collect both sides of the prompt-pool parity into prompt_pool_runs.json and print the table of
reports/parity/prompt_pool.md: per seed A_T (sample-weighted final accuracy), mean ± std, Δ, last-task column.

    python reports/parity/summarise.py /tmp/parity_coda /tmp/parity_coda/clpeft2
"""
import json
import statistics
import sys
from pathlib import Path

official_dir, clpeft_dir = Path(sys.argv[1]), Path(sys.argv[2])
methods = {"l2p": "l2p", "dualprompt": "dual", "coda_prompt": "coda"}
out = {}
print("| method | side | " + " | ".join(f"seed {s}" for s in range(5)) + " | mean ± std | last task (mean) |")
print("|---|---|" + "---|" * 5 + "---|---|")
for strategy, short in methods.items():
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
    means = {}
    for side, runs in rows.items():
        a = [100 * runs[s]["A_T"] if s in runs else None for s in range(5)]
        got = [v for v in a if v is not None]
        means[side] = statistics.mean(got)
        last = statistics.mean(100 * runs[s]["matrix"][-1][-1] for s in runs)
        cells = " | ".join("—" if v is None else f"{v:.1f}" for v in a)
        print(f"| {strategy} | {side} | {cells} | {means[side]:.1f} ± {statistics.stdev(got):.1f} | {last:.1f} |")
    print(f"| {strategy} | Δ clpeft − official | | | | | | {means['clpeft'] - means['official']:+.1f} | |")
(Path(__file__).parent / "prompt_pool_runs.json").write_text(json.dumps(out, indent=1) + "\n")
