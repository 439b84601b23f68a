"""How a method's state, memory and time grow over a long stream: the `long_synthetic` scenario (200 synthetic classes,
100 experiences of 2 by default), one run per method, measured after every experience.

Per experience: the bytes a checkpoint's state takes (the model's state dict and the method's kept attributes,
serialised as a checkpoint serialises them) and its elements, the process's peak resident memory so far (CPU; on
CUDA the peak allocated; each method runs in a process of its own), the training time per optimizer step and the
evaluation time per test sample (the run's own timings, `runtime.json`). Writes one JSON per method under --out and
prints the values at a few experience counts.

    OMP_NUM_THREADS=1 python benchmarks/long_stream_cost.py --methods inflora sd_lora jare hide_prompt finetune \
        [--experiences 100] [--out reports/long_streams]
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


def measure(method: str, experiences: int, device: str, out: Path) -> dict:
    scenario = load_scenario("long_synthetic")
    config = resolve(scenario, strategy=method, seed=0, device=device,
                     overrides={"stream": {"n_experiences": experiences}})
    rows = []

    def probe(i, strategy, stream):
        state = state_of(strategy)
        rows.append({"experience": i, "state_bytes": serialised_bytes(state),
                     "state_elements": elements(state), "peak_memory_mb": peak_memory_mb(device),
                     "steps": sum(e["steps"] for e in strategy.training_log if e["experience"] == i)})

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(config, out_dir=Path(tmp) / method, after_experience=probe)
        runtime = json.loads((Path(tmp) / method / "runtime.json").read_text())
    n_test = sum(results["test_samples"])
    for row, train_s, eval_s in zip(rows, runtime["train_seconds_per_experience"],
                                    runtime["eval_seconds_per_experience"]):
        row["train_ms_per_step"] = 1e3 * train_s / max(row["steps"], 1)
        row["eval_ms_per_sample"] = 1e3 * eval_s / n_test
    record = {"method": method, "experiences": experiences, "device": device, "threads": torch.get_num_threads(),
              "test_samples_per_evaluation": n_test, "wall_seconds": time.perf_counter() - began,
              "status": results["health"]["status"], "final_accuracy": results["metrics"]["final_accuracy"],
              "strategy_summary": results.get("strategy_summary"), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{method}_{experiences}.json").write_text(json.dumps(record, indent=1))
    return record


def table(folder: Path, experiences: int) -> str:
    """A markdown table from the JSON files in ``folder``: each method at 1, 10, 50 and ``experiences``."""
    marks = [m for m in (1, 10, 50, experiences) if m <= experiences]
    lines = ["| method | status | " + " | ".join(f"state MB @{m}" for m in marks) + " | peak RSS MB @" + str(marks[-1])
             + " | train ms/step @1 → @" + str(marks[-1]) + " | eval ms/sample @1 → @" + str(marks[-1]) + " | run s |",
             "|---" * (len(marks) + 6) + "|"]
    for path in sorted(folder.glob(f"*_{experiences}.json")):
        r = json.loads(path.read_text())
        rows = {row["experience"] + 1: row for row in r["rows"]}
        first, last = rows[1], rows[marks[-1]]
        lines.append(f"| {r['method']} | {r['status']} | " + " | ".join(f"{rows[m]['state_bytes'] / 1e6:.2f}" for m in marks)
                     + f" | {last['peak_memory_mb']:.0f} | {first['train_ms_per_step']:.0f} → {last['train_ms_per_step']:.0f}"
                     + f" | {first['eval_ms_per_sample']:.2f} → {last['eval_ms_per_sample']:.2f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", action="store_true", help="print the markdown table of the JSON files in --out and stop")
    p.add_argument("--methods", nargs="+", default=["inflora", "sd_lora", "jare", "hide_prompt", "finetune"])
    p.add_argument("--experiences", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="reports/long_streams")
    args = p.parse_args()
    if args.table:
        print(table(Path(args.out), args.experiences))
        return
    if len(args.methods) > 1:  # one process per method: peak memory is a process's
        print(f"{torch.get_num_threads()} threads, device {args.device}, long_synthetic with {args.experiences} "
              "experiences", flush=True)
        for method in args.methods:
            subprocess.run([sys.executable, __file__, "--methods", method, "--experiences", str(args.experiences),
                            "--device", args.device, "--out", args.out], check=True)
        return
    marks = sorted({1, 10, args.experiences // 4, args.experiences // 2, args.experiences} - {0})
    for method in args.methods:
        r = measure(method, args.experiences, args.device, Path(args.out))
        for row in r["rows"]:
            if row["experience"] + 1 in marks:
                print(f"{method:12s} after {row['experience'] + 1:3d}: state {row['state_bytes'] / 1e6:8.2f} MB "
                      f"({row['state_elements']:>10,d} elements), peak RSS {row['peak_memory_mb']:7.0f} MB, "
                      f"train {row['train_ms_per_step']:7.1f} ms/step, eval {row['eval_ms_per_sample']:6.2f} ms/sample",
                      flush=True)
        print(f"{method:12s} {r['wall_seconds']:.0f} s in all, status {r['status']}, A_T {100 * r['final_accuracy']:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
