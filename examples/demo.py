"""The offline demo: three strategies on the digits stream with the bundled pretrained ViT, then a report.

    python examples/demo.py --out runs/demo
"""
import argparse
import warnings
from pathlib import Path

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/demo")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

scenario = load_scenario("digits_b0_inc2")
for strategy, pet in [("finetune", "adapter"), ("linear_probe", None), ("prototype", None)]:
    config = resolve(scenario, strategy=strategy, pet=pet, seed=args.seed)
    result = run(config, out_dir=Path(args.out) / config.run_id, progress=True)
    print(f"{config.run_id}: final accuracy {result['metrics']['final_accuracy']:.3f}")
print("report:", build_report([args.out], Path(args.out) / "report", title="clpeft demo: digits B0-Inc2"))
