"""Why LAME's denser settings hurt i.i.d. batches here, and how its defaults were chosen: on each strategy's test
logits and features after the last experience (lame_dump.py files), the confidence of the probabilities LAME is
fed, how often a sample's in-batch nearest neighbours share its class, and the change in accuracy that each
setting of the official tuning grid gives on i.i.d., class-grouped and Dirichlet batches of 16.

    python reports/lame/analysis.py /tmp/lame/*.pt > reports/lame/analysis.md
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from clpeft.evaluation.lame import LAMEConfig, lame_assignments
from clpeft.streams.stream import eval_permutation

ORDERS = ("iid", "class_grouped", "dirichlet")
GRID = [("knn", 1), ("knn", 3), ("knn", 5), ("rbf", 3), ("rbf", 5), ("linear", 5)]
BATCH = 16


def batches(y, order):
    perm = eval_permutation(y, BATCH, order, 0, 0.1)
    return [perm[i:i + BATCH] for i in range(0, len(y), BATCH)]


def accuracy(logits, feats, y, order, cfg):
    hits = 0
    for idx in batches(y, order):
        p = F.softmax(logits[idx], -1)
        out = p if cfg is None else lame_assignments(p, feats[idx], cfg)
        hits += int((out.argmax(1) == y[idx]).sum())
    return hits / len(y)


def purity(feats, y, k):
    """Share of each sample's k nearest in-batch neighbours (i.i.d. batches) that have its class."""
    same = n = 0
    for idx in batches(y, "iid"):
        f = F.normalize(feats[idx], dim=1)
        near = torch.cdist(f, f).topk(min(k + 1, len(idx)), largest=False).indices[:, 1:]
        same += float((y[idx][near] == y[idx].unsqueeze(1)).float().mean(1).sum())
        n += len(idx)
    return same / n


def main(paths):
    print(f"LAME on each strategy's final model, digits seed 0, online batches of {BATCH}, {torch.get_num_threads()} "
          "thread(s). Confidence: mean top softmax probability LAME is fed; accuracy: without LAME; NN1/NN5: share "
          "of a sample's 1 / 5 nearest in-batch neighbours (i.i.d. batches) with its class. Then, per setting of the "
          "official tuning grid, the change in accuracy (points) on i.i.d. / class-grouped / Dirichlet (α = 0.1) "
          "batches.\n")
    print("| strategy | accuracy | confidence | NN1 | NN5 | " + " | ".join(f"{a} k={k}" for a, k in GRID) + " |")
    print("|---|---|---|---|---|" + "---|" * len(GRID))
    gains = {g: [] for g in GRID}
    for path in paths:
        d = torch.load(path, weights_only=True)
        logits, feats, y = d["logits"][:, :d["num_seen"]].float(), d["features"].float(), d["y"]
        base = accuracy(logits, feats, y, "iid", None)
        conf = float(F.softmax(logits, -1).max(1).values.mean())
        cells = []
        for a, k in GRID:
            delta = [100 * (accuracy(logits, feats, y, o, LAMEConfig(affinity=a, knn=k)) - base) for o in ORDERS]
            gains[(a, k)].append(delta)
            cells.append(" / ".join(f"{v:+.1f}" for v in delta))
        print(f"| {Path(path).stem} | {100 * base:.1f} | {conf:.2f} | {purity(feats, y, 1):.2f} | {purity(feats, y, 5):.2f} | "
              + " | ".join(cells) + " |")
    print("| **mean** | | | | | " + " | ".join(
        " / ".join(f"{sum(d[i] for d in gains[g]) / len(gains[g]):+.1f}" for i in range(3)) for g in GRID) + " |")
    print("| **worst** | | | | | " + " | ".join(
        " / ".join(f"{min(d[i] for d in gains[g]):+.1f}" for i in range(3)) for g in GRID) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
