"""Collect one method's parity runs into one JSON: the official side's official_<variant>s*.json (from the shim in
official/) and clpeft's clpeft_<variant>s*/results.json (from official/clpeft_*_side.sh), read from one folder.

    python reports/parity/summarise_runs.py inflora /tmp/parity_inflora > reports/parity/inflora_runs.json
    python reports/parity/summarise_runs.py lae_lora /tmp/parity_lae lora_ > reports/parity/lae_lora_runs.json

The third argument is the file-name prefix of a variant (empty by default); a fourth records why the two sides
differ (the ledger's "explained" status). Task-incremental methods (exssnet*) compare the task-IL accuracy.
"""
import json
import statistics
import sys
from pathlib import Path

OFFICIAL = {"inflora": "liangyanshuo/InfLoRA@e08b00e", "sd_lora": "WuYichen-97/SD-Lora-CL@8bacded",
            "slca": "GengDavid/SLCA@169d4e6", "lae_adapter": "gqk/LAE@1680e49", "lae_lora": "gqk/LAE@1680e49",
            "lae_prefix": "gqk/LAE@1680e49", "exssnet": "prateeky2806/exessnet@1e768f8",
            "exssnet_e1": "prateeky2806/exessnet@1e768f8", "ease": "sun-hailong/CVPR24-Ease@6d67508",
            "ease_lr": "sun-hailong/CVPR24-Ease@6d67508", "mos": "sun-hailong/AAAI25-MOS@8d5e07c",
            "mos_lr": "sun-hailong/AAAI25-MOS@8d5e07c", "hide": "thu-ml/HiDe-Prompt@0ed4333",
            "hide_permute": "thu-ml/HiDe-Prompt@0ed4333"}


def task_il(method: str) -> bool:
    return method.startswith("exssnet")


def official_runs(method: str, folder: Path, prefix: str) -> list[dict]:
    runs = []
    for path in sorted(folder.glob(f"official_{prefix}s[0-9]*.json")):
        r = json.loads(path.read_text())
        key = "accuracy_matrix_task_il" if task_il(method) else "accuracy_matrix"
        runs.append({"side": "official", "seed": r["seed"],
                     "final_accuracy": r["final_accuracy_task_il" if task_il(method) else "final_accuracy"],
                     "accuracy_matrix": r[key],
                     **{k: r[k] for k in ("feature_gap", "versions", "task_inference_last") if k in r},
                     "threads": r["threads"], "settings": r["settings"]})
    return runs


def clpeft_runs(method: str, folder: Path, prefix: str = "") -> list[dict]:
    runs = []
    for path in sorted(folder.glob(f"clpeft_{prefix}s[0-9]*/results.json")):
        r = json.loads(path.read_text())
        runtime = json.loads((path.parent / "runtime.json").read_text())
        matrix = r["accuracy_matrix_task_il" if task_il(method) else "accuracy_matrix"]
        if task_il(method):
            matrix = [[0.0 if v != v else v for v in row] for row in matrix]  # not-yet-seen experiences: NaN → 0
            final = sum(a * n for a, n in zip(matrix[-1], r["test_samples"])) / sum(r["test_samples"])
        else:
            final = r["metrics"]["final_accuracy"]
        runs.append({"side": "clpeft", "seed": r["config"]["seed"], "final_accuracy": final,
                     "accuracy_matrix": matrix, "config_hash": r["config_hash"],
                     "head_init_std": r["config"]["model"]["head_init_std"], "strategy_summary": r.get("strategy_summary"),
                     "threads": runtime.get("threads"), "seconds": runtime["train_seconds_total"],
                     **({"task_inference_last": r["task_inference_matrix"][-1]} if r.get("task_inference_matrix") else {})})
    return runs


def main(method: str, folder: Path, prefix: str = "", explained: str | None = None) -> dict:
    runs = official_runs(method, folder, prefix) + clpeft_runs(method, folder, prefix)
    summary = {}
    for side in ("official", "clpeft"):
        vals = [r["final_accuracy"] for r in runs if r["side"] == side]
        if vals:
            summary[side] = {"seeds": len(vals), "A_T_mean": statistics.mean(vals),
                             "A_T_std": statistics.stdev(vals) if len(vals) > 1 else 0.0}
    out = {"method": method, "official": OFFICIAL[method], "stream": "shared digits (5 x 2, order 0..9)",
           "metric": "task-IL accuracy after the last experience" if task_il(method) else "A_T (class-IL)",
           "summary": summary, "runs": runs}
    if (folder / "default_init").is_dir():  # clpeft's side again with PyTorch's default head initialisation
        out["default_init"] = clpeft_runs(method, folder / "default_init")
    if (folder / "feature_check.json").exists():  # the shim's --check-features: the two backbones' features
        out["feature_check"] = json.loads((folder / "feature_check.json").read_text())
    if explained:
        out["explained"] = explained
    return out


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], Path(a[1]), a[2] if len(a) > 2 else "", a[3] if len(a) > 3 else None), indent=1))
