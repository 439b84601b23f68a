"""LAME on top of every strategy: final accuracy with and without it, on i.i.d., Dirichlet and class-grouped
test batches (batch 64), 3 seeds, on the digits stream.

Each run trains once and evaluates its final model under every (batch order, LAME on/off) pair on the
same batches, so the with/without comparison is paired.
"""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/lame")
parser.add_argument("--report", default="reports/lame")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenarios", nargs="+", default=["digits_b0_inc2"])
parser.add_argument("--strategies", nargs="+",
                    default=["finetune", "joint", "linear_probe", "prototype", "ewc", "lwf", "replay", "lae", "wa"])
parser.add_argument("--eval-batch-size", type=int, default=64)
args = parser.parse_args()

overrides = {"train": {"eval_batch_size": args.eval_batch_size}}
configs = [resolve(load_scenario(name), strategy=strategy, seed=seed, tta="lame", overrides=overrides)
           for name in args.scenarios for seed in args.seeds for strategy in args.strategies]
run_all(configs, args.out, log=lambda line: print(line, flush=True))
build_report([args.out], args.report, title="LAME on top of every strategy",
             notes=f"Produced by `make lame` (examples/lame_table.py) on the CPU machine (2 cores). LAME at the official "
                   f"settings (rbf affinity, k = 5, λ = 1, ≤ 100 steps, tol 1e-8); test batches of {args.eval_batch_size}. "
                   "The main table's numbers are with LAME on i.i.d. batches; the last table pairs each batch order "
                   "without LAME, with it, and with the kNN and linear affinities, all on the same trained model and batches.")
