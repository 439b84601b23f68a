"""Collect the WA parity runs (PyCIL's side: official_wa_s*.json; clpeft's: clpeft_wa_s*/results.json) into one JSON.

    python reports/parity/summarise_wa.py /tmp/parity_wa > reports/parity/wa_runs.json
"""
import json
import statistics
import sys
from pathlib import Path


def main(folder: Path) -> dict:
    runs = []
    for path in sorted(folder.glob("official_wa_s*.json")):
        r = json.loads(path.read_text())
        runs.append({"side": "official", "seed": r["seed"], "final_accuracy": r["final_accuracy"],
                     "average_incremental_accuracy": r["average_incremental_accuracy"], "gammas": r["gammas"],
                     "accuracy_matrix": r["accuracy_matrix"], "epochs": r["epochs"], "threads": r["threads"],
                     "seconds": r["seconds"]})
    for path in sorted(folder.glob("clpeft_wa_s*/results.json")):
        r = json.loads(path.read_text())
        runtime = json.loads((path.parent / "runtime.json").read_text())
        runs.append({"side": "clpeft", "seed": r["config"]["seed"], "final_accuracy": r["metrics"]["final_accuracy"],
                     "average_incremental_accuracy": r["metrics"]["average_incremental_accuracy"],
                     "gammas": r["strategy_summary"]["gammas"],
                     "exemplar_accuracy": r["strategy_summary"].get("exemplar_accuracy"),
                     "accuracy_matrix": r["accuracy_matrix"], "config_hash": r["config_hash"],
                     "threads": runtime.get("threads"), "seconds": runtime["train_seconds_total"]})
    summary = {}
    for side in ("official", "clpeft"):
        vals = [r["final_accuracy"] for r in runs if r["side"] == side]
        avg = [r["average_incremental_accuracy"] for r in runs if r["side"] == side]
        if vals:
            summary[side] = {"seeds": len(vals), "A_T_mean": statistics.mean(vals),
                             "A_T_std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                             "Abar_mean": statistics.mean(avg), "Abar_std": statistics.stdev(avg) if len(avg) > 1 else 0.0}
    return {"method": "wa", "official": "G-U-N/PyCIL@87cc4110d607", "stream": "shared digits (5 x 2, order 0..9)",
            "summary": summary, "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=1))
