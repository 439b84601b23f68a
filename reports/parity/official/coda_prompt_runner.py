"""Run CODA-Prompt's own learners (L2P++, DualPrompt, CODA-P: models/zoo.py, learners/prompt.py, learners/default.py)
on the shared digits stream, on CPU, with the shared 32-px backbone. Shims only: CPU instead of .cuda(), the backbone
(their VisionTransformer at the tiny size, loaded with the shared weights; prompt width 96), and the data feeding with
the task loop of their trainer.py (task_id, add_valid_output_dim, process_task_count, learn_batch, per-task eval)."""
import argparse, json, random, sys
import numpy as np
import torch
import torch.nn as nn
sys.path.insert(0, "/tmp/coda")
torch.Tensor.cuda = lambda self, *a, **k: self.clone() if self.requires_grad else self  # CPU: a copy, as .cuda() makes
import models  # noqa: F401  (registers the official model zoo)
import learners  # noqa
from models import zoo
from models import vit as coda_vit
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("--learner", choices=["L2P", "DualPrompt", "CODAPrompt"])
p.add_argument("--prompt-param", type=float, nargs="+")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--out")
args = p.parse_args()
torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
torch.set_num_threads(1)

WIDTH = 96
def tiny_init(self, num_classes=10, pt=False, prompt_flag=False, prompt_param=None):
    nn.Module.__init__(self)
    self.prompt_flag, self.task_id = prompt_flag, None
    feat = coda_vit.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3,
                                      ckpt_layer=0, drop_path_rate=0)
    missing, unexpected = feat.load_state_dict(load_file("/tmp/parity_coda/vit32.safetensors"), strict=False)
    assert not unexpected and all(k.startswith("head") for k in missing), (missing, unexpected)
    self.feat = feat
    self.last = nn.Linear(WIDTH, num_classes)
    cls = {"l2p": zoo.L2P, "dual": zoo.DualPrompt, "coda": zoo.CodaPrompt}.get(prompt_flag)
    self.prompt = cls(WIDTH, prompt_param[0], prompt_param[1], key_dim=WIDTH) if cls else None
zoo.ViTZoo.__init__ = tiny_init

# the shared digits stream: sklearn digits, stratified 80/20 (random_state 0), 8x8 -> 32x32 bilinear, 5 x 2, order 0..9
from shared_digits import digits32
xtr, ytr, xte, yte = digits32()
tasks = [[2 * t, 2 * t + 1] for t in range(5)]

config = {"num_classes": 10, "lr": args.lr, "debug_mode": False, "momentum": 0.9, "weight_decay": 0.0,
          "schedule": [args.epochs], "schedule_type": "cosine", "model_type": "zoo", "model_name": "vit_pt_imnet",
          "optimizer": "Adam", "gpuid": [-1], "memory": 0, "temp": 2.0, "out_dim": 10, "overwrite": True, "DW": False,
          "batch_size": args.batch, "upper_bound_flag": False, "tasks": tasks, "top_k": 1,
          "prompt_param": [len(tasks), args.prompt_param]}
learner = learners.prompt.__dict__[args.learner](config)
R = []
for i, classes in enumerate(tasks):
    mask = (ytr == classes[0]) | (ytr == classes[1])
    data = torch.utils.data.TensorDataset(xtr[mask], ytr[mask], torch.full((int(mask.sum()),), i))
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    learner.model.task_id = i
    learner.add_valid_output_dim(len(classes))
    if i > 0:
        learner.model.prompt.process_task_count()
    learner.learn_batch(loader, data, "/tmp/parity_coda/unused", None)
    row = []
    learner.model.eval()
    with torch.no_grad():
        for t, cl in enumerate(tasks):
            m = (yte == cl[0]) | (yte == cl[1])
            logits = learner.model.forward(xte[m])[:, :learner.valid_out_dim]
            row.append(float((logits.argmax(1) == yte[m]).float().mean()))
    R.append(row)
    print(f"after task {i}: " + " ".join(f"{a:.3f}" for a in row[: i + 1]), flush=True)
n = [int(((yte == cl[0]) | (yte == cl[1])).sum()) for cl in tasks]
final_weighted = float(np.dot(R[-1], n) / sum(n))
result = {"learner": args.learner, "seed": args.seed, "accuracy_matrix": R, "final_accuracy": final_weighted,
          "final_accuracy_task_mean": float(np.mean(R[-1])), "test_samples": n}
print(json.dumps({k: result[k] for k in ("learner", "seed", "final_accuracy", "final_accuracy_task_mean")}))
if args.out:
    json.dump(result, open(args.out, "w"), indent=1)
