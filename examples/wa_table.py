"""WA on the digits stream, 3 seeds, with and without the aligning step: on the frozen Fashion-MNIST ViT with
an Adapter (PET learner) and on a ResNet-32 trained from scratch (PyCIL's backbone). 200 exemplars in total.
"""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/wa")
parser.add_argument("--report", default="reports/wa")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenario", default="digits_b0_inc2")
args = parser.parse_args()

scenario = load_scenario(args.scenario)
RESNET = {"model": {"backbone": "resnet32", "pretrained": False}, "train": {"lr": 0.001, "epochs": 10}}
configs = []
for seed in args.seeds:
    for align in (True, False):
        configs.append(resolve(scenario, strategy="wa", pet="adapter", seed=seed, overrides={"options": {"align": align}}))
        configs.append(resolve(scenario, strategy="wa", pet="none", seed=seed, overrides={**RESNET, "options": {"align": align}}))
run_all(configs, args.out, log=lambda line: print(line, flush=True))
build_report([args.out], args.report, title="Weight Aligning on the digits stream",
             notes="Produced by `make wa` (examples/wa_table.py) on the CPU machine. WA with PyCIL's rules (herding "
                   "exemplars, 200 in total; KD T = 2 with λ = old/seen; aligning after each experience). Rows `wa+adapter`: "
                   "frozen Fashion-MNIST ViT + Adapter, Adam 0.0005, 3 epochs. The resnet32 section: ResNet-32 from scratch, "
                   "all weights trained, Adam 0.001, 10 epochs. `align=False` is the ablation.")
