"""The baseline table: finetune, joint, linear probe, prototype × 3 seeds on two offline streams."""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/baselines")
parser.add_argument("--report", default="reports/baselines")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenarios", nargs="+", default=["digits_b0_inc2", "mnist5k_b0_inc2"])
parser.add_argument("--strategies", nargs="+", default=["finetune", "joint", "linear_probe", "prototype"])
args = parser.parse_args()

configs = [resolve(load_scenario(name), strategy=strategy, seed=seed)
           for name in args.scenarios for strategy in args.strategies for seed in args.seeds]
run_all(configs, args.out, log=lambda line: print(line, flush=True))
build_report([args.out], args.report, title="clpeft baselines on offline streams",
             notes="Produced by `make baselines` (examples/baselines.py) on the CPU machine (2 cores).")
