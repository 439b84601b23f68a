"""The baseline table: finetune, joint, linear probe, prototype × 3 seeds on two offline streams."""
import argparse
import warnings
from pathlib import Path

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/baselines")
parser.add_argument("--report", default="reports/baselines")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenarios", nargs="+", default=["digits_b0_inc2", "mnist5k_b0_inc2"])
parser.add_argument("--strategies", nargs="+", default=["finetune", "joint", "linear_probe", "prototype"])
args = parser.parse_args()

for name in args.scenarios:
    scenario = load_scenario(name)
    for strategy in args.strategies:
        for seed in args.seeds:
            config = resolve(scenario, strategy=strategy, seed=seed)
            out = Path(args.out) / config.run_id
            if (out / "results.json").exists():
                continue
            result = run(config, out_dir=out)
            print(f"{config.run_id}: A_T={result['metrics']['final_accuracy']:.3f}", flush=True)
build_report([args.out], args.report, title="clpeft baselines on offline streams",
             notes="Produced by `make baselines` (examples/baselines.py) on the CPU machine (2 cores).")
