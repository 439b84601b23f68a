"""LAME: fiveai/LAME's own functions (unmodified `src/adaptation/lame.py`) and clpeft's on identical inputs.

For each affinity (kNN, rbf, linear) and batch size, the official `laplacian_optimization(unary, kernel)` with its
`*_affinity` kernels on the L2-normalised features, against `clpeft.evaluation.lame.lame_assignments`; prints the
largest absolute difference of the corrected probabilities per setting as JSON, and each side's distance to the
official code run in float64 (float32 round-off alone, amplified by up to 100 steps of the update). The inputs are a trained clpeft
model's test logits and head-input features (`--dump`, written by `lame_dump.py`) or, without one, seeded random
ones. The official module is loaded from `$LAME_OFFICIAL/src/adaptation/lame.py` (default /tmp/lame_official)
with its two package-relative imports stubbed (the registry and the non-adaptive base class, unused here).

    python reports/parity/official/lame_official.py --dump /tmp/lame/prototype.pt > reports/parity/lame_runs.json
"""
import argparse
import importlib.util
import json
import os
import sys
import types

import torch
import torch.nn.functional as F

ROOT = os.environ.get("LAME_OFFICIAL", "/tmp/lame_official")


def official_module():
    pkg = types.ModuleType("adaptation")
    pkg.__path__ = []
    base = types.ModuleType("adaptation.non_adaptive")
    base.NonAdaptiveMethod = object
    build = types.ModuleType("adaptation.build")
    build.ADAPTER_REGISTRY = types.SimpleNamespace(register=lambda: (lambda cls: cls))
    sys.modules.update({"adaptation": pkg, "adaptation.non_adaptive": base, "adaptation.build": build})
    spec = importlib.util.spec_from_file_location("adaptation.lame", os.path.join(ROOT, "src/adaptation/lame.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dump", help="torch file with test logits, features and labels of a trained clpeft model")
    a = ap.parse_args()
    from clpeft.evaluation.lame import LAMEConfig, lame_assignments

    official = official_module()
    if a.dump:
        d = torch.load(a.dump, weights_only=True)
        logits, feats = d["logits"][:, :d["num_seen"]], d["features"]
    else:
        g = torch.Generator().manual_seed(0)
        logits, feats = 3 * torch.randn(512, 10, generator=g), torch.randn(512, 96, generator=g)
    rows = []
    for affinity in ("knn", "rbf", "linear"):
        for knn in (1, 3, 5):
            if (affinity == "linear" and knn != 5) or (affinity == "rbf" and knn < 2):  # rbf k = 1: σ = 0
                continue
            kernel_fn = getattr(official, f"{affinity if affinity != 'knn' else 'kNN'}_affinity")(sigma=1.0, knn=knn)
            for batch in (16, 64, 256):
                worst, changed, off64, ours64 = 0.0, 0, 0.0, 0.0
                for start in range(0, len(logits) - batch + 1, batch):
                    p = F.softmax(logits[start:start + batch].float(), -1)
                    f = feats[start:start + batch].float()
                    y_off = official.laplacian_optimization(-torch.log(p + 1e-10), kernel_fn(F.normalize(f, p=2, dim=-1)))
                    y_ours = lame_assignments(p, f, LAMEConfig(affinity=affinity, knn=knn, batch_size=batch))
                    worst = max(worst, float((y_off - y_ours).abs().max()))
                    # the official code in float64: how far float32 round-off alone moves each side
                    y_64 = official.laplacian_optimization(-torch.log(p.double() + 1e-10),
                                                           kernel_fn(F.normalize(f.double(), p=2, dim=-1)).double())
                    off64 = max(off64, float((y_off.double() - y_64).abs().max()))
                    ours64 = max(ours64, float((y_ours.double() - y_64).abs().max()))
                    changed += int((y_off.argmax(1) != y_ours.argmax(1)).sum())
                rows.append({"affinity": affinity, "knn": knn, "batch": batch, "max_abs_diff": worst,
                             "argmax_disagreements": changed,
                             "official_vs_float64": off64, "clpeft_vs_float64": ours64})
    print(json.dumps({"official": "fiveai/LAME@d2e5f63090bc", "inputs": a.dump or "seeded random", "samples": len(logits),
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
