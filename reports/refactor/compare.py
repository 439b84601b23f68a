import json, sys
from pathlib import Path
before, after = Path(sys.argv[1]), Path(sys.argv[2])
KEYS = ["accuracy_matrix", "accuracy_matrix_task_il", "accuracy_before_training", "test_samples", "metrics",
        "parameters", "views", "final_accuracy_by_eval_order", "task_inference_matrix", "strategy_summary", "stream"]
rows = []
for d in sorted(before.iterdir()):
    a = d / "results.json"; b = after / d.name / "results.json"
    if not b.exists():
        rows.append((d.name, "missing")); continue
    A, B = json.loads(a.read_text()), json.loads(b.read_text())
    diffs = [k for k in KEYS if json.dumps(A.get(k), sort_keys=True) != json.dumps(B.get(k), sort_keys=True)]
    rows.append((d.name, "identical" if not diffs else "DIFFERS: " + ", ".join(diffs)))
for name, status in rows:
    print(f"| {name} | {status} |")
