"""Task-IL A_T (each test sample scored among its own experience's classes) and the last experience's class-IL
accuracy per method and stream, from the sweep's runs: what the README quotes next to the class-IL table.

    python reports/lora_tier/task_il.py [runs/lora_tier]
"""
import json
import statistics
import sys
from pathlib import Path


def main(root: Path) -> None:
    rows = {}
    for path in sorted(root.glob("*/results.json")):
        d = json.loads(path.read_text())
        key = (d["stream"]["name"], d["config"]["strategy"])
        n = d["test_samples"]
        task_il = sum(a * c for a, c in zip(d["accuracy_matrix_task_il"][-1], n)) / sum(n)
        rows.setdefault(key, []).append((task_il, d["accuracy_matrix"][-1][-1]))
    print("| stream | method | seeds | task-IL A_T | class-IL accuracy of the last experience |")
    print("|---|---|---|---|---|")
    for (stream, method), values in sorted(rows.items()):
        ti, last = [100 * v[0] for v in values], [100 * v[1] for v in values]
        print(f"| {stream} | {method} | {len(values)} | {statistics.mean(ti):.1f} ± {statistics.stdev(ti):.1f} | "
              f"{statistics.mean(last):.1f} ± {statistics.stdev(last):.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/lora_tier"))
