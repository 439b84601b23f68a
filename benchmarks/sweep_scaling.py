"""Sweep throughput on Ray: an 8-run sweep on 1 vs 2 Ray workers (one CPU each), and Ray's overhead per run
against the in-process engine running the same 8 runs on one thread. Target: ≥ 1.7× speed-up with 2 workers.

Each run: the small ViT (random init) on the digits stream (5 experiences, 1 epoch), finetune, seeds 0-7: a
few seconds per run, a short run of the kind a grid holds hundreds of. The Ray wall times include starting
Ray and its workers (what a user waits for).

    python benchmarks/sweep_scaling.py [--runs 8] [--epochs 2]
"""
import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml

warnings.filterwarnings("ignore")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    from clpeft.sweep import load_sweep, run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="sweep_scaling_"))
    scenario = {"name": "scaling", "stream": {"dataset": "digits", "n_experiences": 5},
                "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
                "train": {"epochs": args.epochs, "lr": 0.001, "batch_size": 32}}
    (tmp / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    (tmp / "sweep.yaml").write_text(yaml.safe_dump({"scenario": str(tmp / "scenario.yaml"), "grid": {
        "strategy": ["finetune"], "seed": list(range(args.runs))}, "resources": {"cpus": 1}}))
    import ray

    walls, startup = {}, {}
    for name, engine, workers in [("local", "local", None), ("ray, 1 worker", "ray", 1), ("ray, 2 workers", "ray", 2)]:
        sweep = load_sweep(tmp / "sweep.yaml", out=tmp / name.replace(" ", "_").replace(",", ""))
        torch.set_num_threads(1)  # the local engine on one core, as each Ray worker
        start = time.perf_counter()
        if engine == "ray":  # started here so that its start-up is timed apart; the sweep joins it
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            startup[name] = time.perf_counter() - start
        summary = run_sweep(sweep, engine=engine, workers=workers, report=False, log=lambda line: None)
        walls[name] = time.perf_counter() - start
        if engine == "ray":
            ray.shutdown()
        assert summary["done"] == args.runs, summary
        extra = f" (Ray start-up {startup[name]:.1f} s)" if name in startup else ""
        print(f"{name:16s} {walls[name]:7.1f} s for {args.runs} runs{extra}", flush=True)
    speedup = walls["ray, 1 worker"] / walls["ray, 2 workers"]
    without = (walls["ray, 1 worker"] - startup["ray, 1 worker"]) / (walls["ray, 2 workers"] - startup["ray, 2 workers"])
    overhead = (walls["ray, 1 worker"] - startup["ray, 1 worker"] - walls["local"]) / args.runs
    print(f"speed-up 2 vs 1 Ray workers: {speedup:.2f}× with Ray's start-up, {without:.2f}× without   (target ≥ 1.7)")
    print(f"Ray overhead per run (1 worker vs in-process, start-up excluded): {overhead:+.2f} s "
          f"({overhead / (walls['local'] / args.runs) * 100:+.0f} % of a {walls['local'] / args.runs:.1f} s run)")


if __name__ == "__main__":
    main()
