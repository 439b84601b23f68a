"""JARe on the digits stream, 3 seeds: class-incremental accuracy next to retrieval accuracy (the share of
test samples whose top-1 slot belongs to their own experience), on mixed-class (i.i.d.) test batches.

Rows: per-sample retrieval (clpeft's default); the official per-batch retrieval on the same i.i.d. batches
and on class-grouped batches (where a batch is one task, so batch retrieval reads the task off the batch);
`train_slots=joint` (old frozen slots retrievable while training, as SLM-BERT).
"""
import argparse
import warnings

from clpeft.config import load_scenario, resolve
from clpeft.reports.report import build_report
from clpeft.run import run_all

warnings.filterwarnings("ignore")

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="runs/jare")
parser.add_argument("--report", default="reports/jare")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
parser.add_argument("--scenario", default="digits_b0_inc2")
parser.add_argument("--variants", type=int, default=4, help="the first N rows of VARIANTS (1: per-sample only)")
args = parser.parse_args()

scenario = load_scenario(args.scenario)
VARIANTS = [({}, "iid"), ({"retrieval": "batch"}, "iid"), ({"retrieval": "batch"}, "class_grouped"),
            ({"train_slots": "joint"}, "iid")]
configs = [resolve(scenario, strategy="jare", seed=seed, overrides={"options": options, "stream": {"eval_order": order}})
           for seed in args.seeds for options, order in VARIANTS[:args.variants]]
configs += [resolve(scenario, strategy="prototype", seed=seed) for seed in args.seeds]  # the frozen features alone
run_all(configs, args.out, log=lambda line: print(line, flush=True))
build_report([args.out], args.report, title=f"JARe/DTKR on {args.scenario}",
             notes=f"Produced by examples/jare_table.py --scenario {args.scenario} on the CPU machine (2 cores); settings "
                   f"from scenarios/{args.scenario}.yaml ({scenario.get('description', '')}). Per experience 4 slots: "
                   "grouped keys (6 groups) fitted on the experience's frozen queries, and 4 LoRA increments (rank 8, "
                   "scale 1) on every attention output projection; each sample mixes its top-4 slots by similarity in "
                   "one batched forward; shared head (std 0.001 init), CE over the current experience's classes. Task "
                   "inference column = retrieval accuracy (top-1 slot of the sample's own experience); task-IL = oracle "
                   "retrieval (own experience's slots only). Test batches are i.i.d. (mixed classes) unless a row says "
                   "class_grouped. `prototype`: cosine prototypes on the same frozen features (no increments).")
