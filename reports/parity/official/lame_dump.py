"""Train one clpeft strategy on a scenario and save what LAME consumes after the last experience: the test set's
logits and head-input features (i.i.d. order) and labels, for the official-code comparison in lame_official.py.

    python reports/parity/official/lame_dump.py digits_b0_inc2 prototype 0 /tmp/lame/prototype.pt
"""
import sys

import torch

from clpeft.config import load_scenario, resolve
from clpeft.run import run

scenario, strategy, seed, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = resolve(load_scenario(scenario), strategy=strategy, seed=seed)


@torch.no_grad()
def dump(i, s, stream):
    if i != stream.n_experiences - 1:
        return
    s.model.eval()
    logits, feats, labels = [], [], []
    for x, y, _ in stream.eval_batches(256, 0, "iid"):
        if stream.batch_eval_transform is not None:
            x = stream.batch_eval_transform(x)
        p = s.predict(x)
        logits.append(p.logits.float())
        feats.append(p.features.float())
        labels.append(y)
    torch.save({"logits": torch.cat(logits), "features": torch.cat(feats), "y": torch.cat(labels),
                "num_seen": s.model.head.num_seen}, out)


print(strategy, seed, run(config, after_experience=dump)["metrics"]["final_accuracy"])
