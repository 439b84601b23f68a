"""What the shims around PyCIL-style official learners (InfLoRA, SD-LoRA: `incremental_train(data_manager)` then
`after_task()`) share: their arguments, the shared digits stream served as their data manager serves data, and the
task loop that scores each task's test samples among the seen classes after every task."""
import argparse
import json
import os
import random

import numpy as np
import torch

from shared_digits import digits32


class Indexed(torch.utils.data.Dataset):
    """Their data manager's dataset contract: (index, image, label)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return i, self.x[i], int(self.y[i])


class DigitsManager:
    """The shared digits stream as their DataManager serves it: tasks of 2 classes in the order 0..9."""

    def __init__(self):
        self.xtr, self.ytr, self.xte, self.yte = digits32()

    def get_task_size(self, task):
        return 2

    def get_dataset(self, indices, source, mode):
        x, y = (self.xtr, self.ytr) if source == "train" else (self.xte, self.yte)
        keep = torch.isin(y, torch.as_tensor(np.asarray(indices)))
        return Indexed(x[keep], y[keep])


def arguments(description: str, lr: float) -> argparse.Namespace:
    """--seed --epochs --batch --lr --out; seeds torch, numpy and random."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    return args


def run_tasks(learner, manager: DigitsManager, logits, args, feature_gap: float | None = None, rank: int = 10,
              settings: dict | None = None) -> None:
    """Their task loop (incremental_train → evaluate → after_task); ``logits(learner, x)`` scores the test set with
    their own network. Writes the accuracy matrix and A_T to ``args.out`` (``settings``: what to record of the run's
    arguments; by default the LoRA shims' epochs, batch, lr and rank)."""
    R, n = [], [int(((manager.yte // 2) == t).sum()) for t in range(5)]
    for task in range(5):
        learner.incremental_train(manager)
        learner._network.eval()
        with torch.no_grad():
            pred = logits(learner, manager.xte).argmax(1)
        R.append([float((pred[m] == manager.yte[m]).float().mean()) if task >= t else 0.0
                  for t, m in ((t, (manager.yte // 2) == t) for t in range(5))])
        learner.after_task()
        print(f"after task {task}: " + " ".join(f"{a:.3f}" for a in R[-1][: task + 1]), flush=True)
    result = {"side": "official", "seed": args.seed, "accuracy_matrix": R,
              "final_accuracy": float(np.dot(R[-1], n) / sum(n)), "test_samples": n,
              **({"feature_gap": feature_gap} if feature_gap is not None else {}), "threads": torch.get_num_threads(),
              "settings": settings or {"epochs": args.epochs, "batch": args.batch, "lr": args.lr, "rank": rank}}
    print(json.dumps({k: result[k] for k in ("side", "seed", "final_accuracy")}))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
