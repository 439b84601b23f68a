"""Both sides of the RanPAC/APER end-to-end parity (official/ptm_end_to_end.py, official/clpeft_ptm_side.sh):
per-seed A_T, mean ± std, seed 0's last row; writes ptm_end_to_end_runs.json. A side whose files are not in the
folder keeps its committed runs (so one side can be re-run alone).

    python reports/parity/summarise_ptm_end_to_end.py /tmp/parity_ptm/e2e
"""
import json, statistics, sys
from pathlib import Path
d = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/parity_ptm/e2e")
record = Path(__file__).parent / "ptm_end_to_end_runs.json"
committed = json.loads(record.read_text()) if record.exists() else {}
out = {}
for m in ("ranpac", "aper"):
    rows = {"official": {}, "clpeft": {}}
    for s in range(3):
        o = d / f"official_{m}_s{s}.json"; c = d / f"clpeft_{m}_s{s}" / "results.json"
        if o.exists():
            r = json.loads(o.read_text()); rows["official"][s] = {"A_T": r["final_accuracy"], "matrix": r["accuracy_matrix"], "lambdas": r["lambdas"]}
        if c.exists():
            r = json.loads(c.read_text()); rows["clpeft"][s] = {"A_T": r["metrics"]["final_accuracy"], "matrix": r["accuracy_matrix"],
                                                                "summary": r.get("strategy_summary"), "config_hash": r["config_hash"],
                                                                "threads": json.loads((c.parent / "runtime.json").read_text())["threads"]}
    for side in rows:
        if not rows[side] and m in committed:
            rows[side] = {int(k): v for k, v in committed[m][side].items()}
    out[m] = rows
    for side, runs in rows.items():
        a = [100 * runs[s]["A_T"] for s in sorted(runs)]
        print(m, side, [f"{v:.1f}" for v in a], f"{statistics.mean(a):.1f} ± {statistics.stdev(a) if len(a) > 1 else 0:.1f}",
              "last row", [round(100 * v, 1) for v in runs[0]["matrix"][-1]] if 0 in runs else None)
record.write_text(json.dumps(out, indent=1) + "\n")
