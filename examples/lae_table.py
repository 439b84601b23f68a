"""LAE on the offline streams: every PET module × 3 seeds, plus the off-by-default extras on Adapter.

The same frozen Fashion-MNIST ViT and streams as the baseline table, so the rows compare. Each LAE
row also reports its online and offline experts alone.
"""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/lae")
parser.add_argument("--report", default="reports/lae")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenarios", nargs="+", default=["digits_b0_inc2", "mnist5k_b0_inc2"])
parser.add_argument("--pets", nargs="+", default=["adapter", "lora", "prefix", "prompt"])
parser.add_argument("--baselines", nargs="*", default=["linear_probe", "prototype"],
                    help="reference strategies run into the same folder (frozen backbone, same streams)")
parser.add_argument("--extras-on", nargs="*", default=["digits_b0_inc2"],
                    help="scenarios that also get the extras and the reference baselines (CPU time is short)")
args = parser.parse_args()

EXTRAS = [{"ema_per_experience": 0.5}, {"align_heads": True}, {"ema_per_experience": 0.5, "align_heads": True}]

configs = []
for name in args.scenarios:
    scenario = load_scenario(name)
    for seed in args.seeds:
        configs += [resolve(scenario, strategy="lae", pet=pet, seed=seed) for pet in args.pets]
        if name in args.extras_on:
            configs += [resolve(scenario, strategy="lae", pet="adapter", seed=seed, overrides={"options": extra})
                        for extra in EXTRAS]
            configs += [resolve(scenario, strategy=s, seed=seed) for s in args.baselines]
run_all(configs, args.out, log=lambda line: print(line, flush=True))
NOTES = ("Produced by `make lae` (examples/lae_table.py) on the CPU machine (2 cores). LAE uses its official CIFAR-100 "
         "optimisation (Adam 0.0028125, batch 24 with drop_last, 5 epochs, PET frozen for the first 3 from experience 1, "
         "EMA 0.9999 per step, heads N(0, 0.001²)); PET settings as LAE's (blocks 0-4; adapter h = 5, LoRA r = 5 on K/V, "
         "prefix L = 10 with compensation, prompt L = 5). Bracketed rows: the off-by-default extras. linear_probe and "
         "prototype are the frozen-backbone references on the same streams.")
build_report([args.out], args.report, title="LAE on offline streams", notes=NOTES)
