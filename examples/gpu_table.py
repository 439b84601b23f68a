"""The digits stream on a CUDA GPU, fp32 and bf16 autocast, next to the CPU tables: the same configs as
`make baselines/lae/wa/exssnet` with only the device and precision changed. Run on a GPU machine; the
report in reports/gpu records the last such run.

    python examples/gpu_table.py [--strategies lae wa] [--amp bf16 off] [--no-report | --report-only]

Processes sharing one GPU each take some --strategies with --no-report; --report-only then builds the report.
"""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/gpu")
parser.add_argument("--report", default="reports/gpu")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenario", default="digits_b0_inc2")
parser.add_argument("--device", default="cuda")
parser.add_argument("--amp", nargs="+", default=["bf16", "off"])
parser.add_argument("--strategies", nargs="+", default=["finetune", "joint", "prototype", "lwf", "lae", "wa", "exssnet"])
parser.add_argument("--report-only", action="store_true", help="only build the report from --out")
parser.add_argument("--no-report", action="store_true", help="only run (several processes share --out)")
args = parser.parse_args()

if not args.report_only:
    scenario = load_scenario(args.scenario)
    configs = [resolve(scenario, strategy=strategy, seed=seed, device=args.device, amp=amp)
               for amp in args.amp for strategy in args.strategies for seed in args.seeds]
    run_all(configs, args.out, log=lambda line: print(line, flush=True))
if not args.no_report:
    build_report([args.out], args.report, title=f"The digits stream on {args.device}: fp32 and bf16 autocast",
                 notes="Produced by examples/gpu_table.py on a GPU machine: the digits_b0_inc2 scenario's settings "
                       "for each strategy (as in the CPU tables), device cuda, amp off (fp32) and bf16 autocast. "
                       "Runtime columns are wall times on that GPU.")
