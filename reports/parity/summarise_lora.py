"""Collect the InfLoRA or SD-LoRA parity runs (official side: official_s*.json from official/inflora_official.py or
official/sd_lora_official.py; clpeft's: clpeft_s*/results.json from official/clpeft_lora_side.sh) into one JSON.

    python reports/parity/summarise_lora.py inflora /tmp/parity_inflora > reports/parity/inflora_runs.json
    python reports/parity/summarise_lora.py sd_lora /tmp/parity_sd_lora > reports/parity/sd_lora_runs.json

A third argument records why the two sides differ (the ledger's "explained" status).
"""
import json
import statistics
import sys
from pathlib import Path

OFFICIAL = {"inflora": "liangyanshuo/InfLoRA@e08b00e", "sd_lora": "WuYichen-97/SD-Lora-CL@8bacded"}


def official_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("official_s*.json")):
        r = json.loads(path.read_text())
        runs.append({"side": "official", "seed": r["seed"], "final_accuracy": r["final_accuracy"],
                     "accuracy_matrix": r["accuracy_matrix"], "feature_gap": r["feature_gap"], "threads": r["threads"],
                     "settings": r["settings"]})
    return runs


def clpeft_runs(folder: Path) -> list[dict]:
    runs = []
    for path in sorted(folder.glob("clpeft_s*/results.json")):
        r = json.loads(path.read_text())
        runtime = json.loads((path.parent / "runtime.json").read_text())
        runs.append({"side": "clpeft", "seed": r["config"]["seed"], "final_accuracy": r["metrics"]["final_accuracy"],
                     "accuracy_matrix": r["accuracy_matrix"], "config_hash": r["config_hash"],
                     "head_init_std": r["config"]["model"]["head_init_std"], "strategy_summary": r["strategy_summary"],
                     "threads": runtime.get("threads"), "seconds": runtime["train_seconds_total"]})
    return runs


def main(method: str, folder: Path, explained: str | None = None) -> dict:
    runs = official_runs(folder) + clpeft_runs(folder)
    summary = {}
    for side in ("official", "clpeft"):
        vals = [r["final_accuracy"] for r in runs if r["side"] == side]
        if vals:
            summary[side] = {"seeds": len(vals), "A_T_mean": statistics.mean(vals),
                             "A_T_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    out = {"method": method, "official": OFFICIAL[method], "stream": "shared digits (5 x 2, order 0..9)",
           "summary": summary, "runs": runs}
    if (folder / "default_init").is_dir():  # clpeft's side again with PyTorch's default head initialisation
        out["default_init"] = clpeft_runs(folder / "default_init")
    if explained:
        out["explained"] = explained
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None), indent=1))
