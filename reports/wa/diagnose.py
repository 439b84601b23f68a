"""Where WA's bias towards the newest classes sits: after every experience of a WA run, on the test samples of the
classes seen so far, split each old sample's margin (its true logit minus the best new-class logit) into the part
from the weights and the part from the biases; the rows' norms, and their component along the features' mean
(w·μ + b: an effective bias that aligning norms cannot touch); and the accuracy on the old exemplars it trained on.

    python reports/wa/diagnose.py mnist5k_b0_inc2 0 [section.key=json ...]     # e.g. train.epochs=10 train.lr=0.002

Its own evaluations draw from the global RNG (data loaders), so the run's A_T differs slightly from a plain run's.
"""
import json
import sys

import torch

from clpeft.config import load_scenario, resolve
from clpeft.run import run

scenario, seed = sys.argv[1], int(sys.argv[2])
overrides = {}
for item in sys.argv[3:]:
    key, value = item.split("=", 1)
    section, name = key.split(".", 1)
    overrides.setdefault(section, {})[name] = json.loads(value)
config = resolve(load_scenario(scenario), strategy="wa", seed=seed, overrides=overrides)


@torch.no_grad()
def diagnose(i, s, stream):
    m = s.model
    m.eval()
    xs, ys = [], []
    for exp in stream.test_stream:
        for batch in torch.utils.data.DataLoader(exp.dataset.eval(), batch_size=512):
            xs.append(batch[0])
            ys.append(torch.as_tensor(batch[1]))
    x, y = torch.cat(xs), torch.cat(ys)
    f = m.features(x).float()
    W = torch.cat([c.weight for c in m.head.chunks])
    b = torch.cat([c.bias for c in m.head.chunks])
    keep = y < m.head.num_seen
    f, y = f[keep], y[keep]
    wx, logits = f @ W.T, f @ W.T + b
    n_old = s.n_old
    row = {"experience": i, "accuracy": float((logits.argmax(1) == y).float().mean())}
    old = y < n_old
    if old.any():
        best_new = logits[old][:, n_old:].argmax(1) + n_old
        idx, yt = torch.arange(int(old.sum())), y[old]
        row["old_samples_predicted_new"] = float((logits[old].argmax(1) >= n_old).float().mean())
        row["old_margin_from_weights"] = float((wx[old][idx, yt] - wx[old][idx, best_new]).mean())
        row["old_margin_from_biases"] = float((b[yt] - b[best_new]).mean())
        norms = W.norm(dim=1)
        row["row_norm_old_new_after_aligning"] = [float(norms[:n_old].mean()), float(norms[n_old:].mean())]
        eff = W @ f.mean(0) + b
        row["effective_bias_old_new"] = [float(eff[:n_old].mean()), float(eff[n_old:].mean())]
        row["old_exemplars_fit"] = s.memory_fit[-1]
    print(json.dumps(row), flush=True)
    m.train()


result = run(config, after_experience=diagnose)
print(json.dumps({"final_accuracy": result["metrics"]["final_accuracy"], "last_row": result["accuracy_matrix"][-1],
                  "gammas": result["strategy_summary"]["gammas"], "threads": torch.get_num_threads()}))
