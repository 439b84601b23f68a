"""HiDe-Prompt end to end with the official code (thu-ml/HiDe-Prompt: trainers/tii_trainer.py then
trainers/hideprompt_trainer.py, engines/hide_tii_engine.py and engines/hide_promtp_wtp_and_tap_engine.py,
vits/hide_prompt_vision_transformer.py, peft/prompt/hide_prompt.py) on the shared digits stream, on CPU, with the
shared 32-px backbone — the two programs of its training scripts, one after the other, as they run them.

Runs in its own environment (its requirements: torch 1.13.1, timm 0.6.7; `official/hide_requirements.txt`).
Shims only: `.cuda()` and `torch.cuda.synchronize()` stay on the CPU; a one-process gloo group stands in for its
8-GPU launch (its `_compute_mean` all-gathers; its metric logger, which syncs through 'cuda', is told there is no
group); `create_model` builds the official VisionTransformer at the tiny
size (patch 4, 1 channel, width 96, depth 6, 3 heads; answering to `.module` as its DDP wrapper would: the prompt
momentum reads `model.module`) with the shared weights (timm's layout, as its loader reads
them; the official init draws the rest: prompts U(−1, 1), head and router truncated normal 0.02);
`build_continual_dataloader` serves the shared stream (per-task train/test loaders, per-class loaders, the class
mask and class → task map). Arguments are the official config's (`configs/cifar100_hideprompt_5e.py`) with the
training script's flags and the sizes given below. `--layout permute` replaces the prompt's reshape with a permute
then reshape (each sample its own prompt's keys and values) to measure what the official layout changes.
The accuracy matrix is the official one (`evaluate_till_now`'s, after TAP); the task-inference accuracy per task of
the last evaluation is its `Acc@task`."""
import argparse
import json
import os
import random
import sys
from functools import partial

import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=5, help="WTP epochs (the prompts)")
p.add_argument("--tii-epochs", type=int, default=5, help="TII epochs (the router)")
p.add_argument("--lr", type=float, default=0.03, help="WTP rate before the official × batch/256")
p.add_argument("--tii-lr", type=float, default=0.0005, help="TII rate before the official × batch/256")
p.add_argument("--batch", type=int, default=32)
p.add_argument("--length", type=int, default=5, help="prompt tokens (keys; as many values)")
p.add_argument("--layout", choices=("official", "permute"), default="official")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", default="/tmp/parity_hide/official.json")
args = p.parse_args()
torch.set_num_threads(args.threads)
HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL = os.environ.get("HIDE_OFFICIAL", "/tmp/hide")
sys.path.insert(0, HERE)
sys.path.insert(0, OFFICIAL)
from shared_digits import digits32, keep_cuda_on_cpu  # noqa: E402

keep_cuda_on_cpu()
torch.cuda.synchronize = lambda *a, **k: None
os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(29500 + args.seed + (50 if args.layout == "permute" else 0)))
torch.distributed.init_process_group("gloo", rank=0, world_size=1)

if args.layout == "permute":  # each sample its own prompt: permute [layers, 2, B, …] to [layers, B, 2, …] first
    import peft.prompt.hide_prompt as hp
    src = open(hp.__file__).read()
    bad = "batched_prompt = batched_prompt_raw.reshape(\n                        num_layers, batch_size, dual,"
    assert src.count(bad) == 3, "the official prefix reshapes moved"  # the three prefix branches, not the prompt ones
    src = src.replace(bad, bad.replace(".reshape(", ".permute(0, 2, 1, 3, 4, 5, 6).reshape("))
    exec(compile(src, hp.__file__, "exec"), hp.__dict__)

import utils as official_utils  # noqa: E402
official_utils.is_dist_avail_and_initialized = lambda: False  # its metric sync sends to 'cuda'; one process needs none
import vits.hide_prompt_vision_transformer as hvit  # noqa: E402
from configs.cifar100_hideprompt_5e import get_args_parser  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

WEIGHTS = "/tmp/parity_coda/vit32.safetensors"


def tiny_vit(name, pretrained=False, num_classes=10, drop_rate=0.0, drop_path_rate=0.0, drop_block_rate=None,
             **kwargs):
    model = hvit.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=3,
                                   num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                                   norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kwargs)
    state = {k: v for k, v in load_file(WEIGHTS).items() if not k.startswith("head")}
    msg = model.load_state_dict(state, strict=False)
    assert not msg.unexpected_keys, msg.unexpected_keys
    assert all(k.startswith(("head", "mlp", "e_prompt", "fc_norm")) for k in msg.missing_keys), msg.missing_keys
    object.__setattr__(model, "module", model)  # its prompt momentum reads model.module (it always runs under DDP)
    return model


class Split(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


xtr, ytr, xte, yte = digits32()


def loaders(a):
    train, per_cls, class_mask, target_task_map = [], {}, [], {}
    for t in range(5):
        classes = [2 * t, 2 * t + 1]
        class_mask.append(classes)
        target_task_map.update({c: t for c in classes})
        tr, te = torch.isin(ytr, torch.tensor(classes)), torch.isin(yte, torch.tensor(classes))
        train.append({"train": torch.utils.data.DataLoader(Split(xtr[tr], ytr[tr]), batch_size=a.batch_size,
                                                           shuffle=True),
                      "val": torch.utils.data.DataLoader(Split(xte[te], yte[te]), batch_size=a.batch_size)})
        for c in classes:
            keep = ytr == c
            per_cls[c] = {"train": torch.utils.data.DataLoader(Split(xtr[keep], ytr[keep]), batch_size=a.batch_size),
                          "val": None}
    a.nb_classes = 10
    return train, per_cls, class_mask, target_task_map


def official_args(extra):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="subparser_name")
    get_args_parser(sub.add_parser("cifar100_hideprompt_5e"))
    a = parser.parse_args(["cifar100_hideprompt_5e", "--device", "cpu", "--num_workers", "0", "--num_tasks", "5",
                           "--batch-size", str(args.batch), "--seed", str(args.seed), *extra])
    a.config, a.distributed, a.world_size, a.gpu, a.rank = "cifar100_hideprompt_5e", False, 1, None, 0
    return a


records = []


def recording(engine):
    """The official evaluate_till_now, recording each call's accuracy matrix and task-inference accuracy."""
    original = engine.evaluate_till_now

    def wrapped(*a, **k):
        stats = original(*a, **k)
        records.append({"task": k["task_id"], "matrix": k["acc_matrix"].copy(), "matrix_id": id(k["acc_matrix"])})
        return stats

    engine.evaluate_till_now = wrapped
    evaluate = engine.evaluate

    def evaluated(*a, **k):
        stats = evaluate(*a, **k)
        tasks.append(stats["Acc@task"] / 100)
        return stats

    engine.evaluate = evaluated


tasks = []
def seeded():
    torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)


out_dir = f"/tmp/parity_hide_work/{args.layout}_s{args.seed}"
import engines.hide_promtp_wtp_and_tap_engine as wtp_engine  # noqa: E402
import trainers.hideprompt_trainer as wtp_trainer  # noqa: E402
import trainers.tii_trainer as tii_trainer  # noqa: E402

for module in (tii_trainer, wtp_trainer):
    module.create_model = tiny_vit
    module.build_continual_dataloader = loaders
recording(wtp_engine)

# 1. task-identity inference: `--train_inference_task_only`, constant schedule (train_cifar100_vit.sh, first loop)
seeded()
tii_trainer.train(official_args(["--epochs", str(args.tii_epochs), "--sched", "constant", "--lr", str(args.tii_lr),
                                 "--train_inference_task_only", "--output_dir", out_dir + "_tii"]))
# 2. within-task prediction and TAP (second loop): step schedule, prompt momentum 0.01, reg 0.1, larger prompt rate
seeded()
wtp_trainer.train(official_args(["--epochs", str(args.epochs), "--ca_lr", "0.005", "--crct_epochs", "30",
                                 "--prompt_momentum", "0.01", "--reg", "0.1", "--length", str(args.length),
                                 "--sched", "step", "--larger_prompt_lr", "--lr", str(args.lr),
                                 "--trained_original_model", out_dir + "_tii", "--output_dir", out_dir + "_wtp"]))
final = [r for r in records if r["task"] == 4][-1]   # the last call of the last task: after TAP
ids = {r["matrix_id"] for r in records if r["task"] == 4}
assert len(ids) == 2 and final["matrix_id"] == records[-1]["matrix_id"], "pre- and post-TAP matrices mixed up"
R = [[float(final["matrix"][i, t]) / 100 if i <= t else 0.0 for i in range(5)] for t in range(5)]
n = [int((yte // 2 == t).sum()) for t in range(5)]
result = {"side": "official", "seed": args.seed, "accuracy_matrix": R,
          "final_accuracy": float(np.dot(R[-1], n) / sum(n)), "test_samples": n,
          "task_inference_last": tasks[-5:], "threads": torch.get_num_threads(),
          "versions": {"torch": torch.__version__, "timm": __import__("timm").__version__},
          "settings": {k: v for k, v in vars(args).items() if k not in ("out", "seed")}}
print(json.dumps({k: result[k] for k in ("side", "seed", "final_accuracy")}))
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
