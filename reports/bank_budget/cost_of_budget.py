"""The accuracy cost of train.bank_budget: each budgeted run against the unbudgeted run of the same stream, method
and seed (runs of `make bank-budget`), with the bank's size at the end.

    python reports/bank_budget/cost_of_budget.py runs/bank_budget > reports/bank_budget/cost_of_budget.md
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def key(r: dict) -> tuple:
    return r["stream"]["name"], r["config"]["stream"]["n_experiences"], r["config"]["strategy"]


def main(folder: str) -> None:
    paths = sorted(Path(folder).rglob("results.json"))
    runs = [json.loads(p.read_text()) for p in paths]
    threads = sorted({str(json.loads((p.parent / "runtime.json").read_text())["threads"]) for p in paths})
    pairs = defaultdict(dict)  # (stream, T, method) → budget → seed → run
    for r in runs:
        pairs[key(r)].setdefault(r["config"]["train"].get("bank_budget"), {})[r["config"]["seed"]] = r
    print("| stream | experiences | method | budget | seeds | A_T unbudgeted | A_T budgeted | paired difference "
          "| largest change of an accuracy-matrix entry | PET parameters at the end, unbudgeted → budgeted |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (stream, T, method), by_budget in sorted(pairs.items()):
        base = by_budget.get(None, {})
        for budget, seeds in sorted((b, s) for b, s in by_budget.items() if b is not None):
            common = sorted(set(seeds) & set(base))
            if not common:
                continue
            a0 = np.array([base[s]["metrics"]["final_accuracy"] for s in common]) * 100
            a1 = np.array([seeds[s]["metrics"]["final_accuracy"] for s in common]) * 100
            diff = a1 - a0
            entry = max(float(np.nanmax(np.abs(np.array(seeds[s]["accuracy_matrix"]) -
                                               np.array(base[s]["accuracy_matrix"])))) for s in common) * 100
            p0 = base[common[0]]["parameters"]["pet_all_instances"]
            p1 = seeds[common[0]]["parameters"]["pet_all_instances"]
            print(f"| {stream} | {T} | {method} | {budget} | {len(common)} | {a0.mean():.1f} ± {a0.std():.1f} "
                  f"| {a1.mean():.1f} ± {a1.std():.1f} | {diff.mean():+.1f} ± {diff.std():.1f} | {entry:.1f} "
                  f"| {p0:,} → {p1:,} |")
    print("\nA_T in %, mean ± std over seeds (population std); the difference is budgeted − unbudgeted, seed by seed; "
          f"threads per run: {', '.join(threads)}.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bank_budget")
