"""InfLoRA's subspace machinery against the official code (liangyanshuo/InfLoRA, unmodified `update_DualGPM` of
`methods/inflora.py`) on the same real layer inputs.

clpeft's InfLoRA runs on the shared digits stream (class order 0..9, the project's Fashion-MNIST ViT, its scenario
settings with `--epochs` given here); every Gram matrix it records is kept: before each experience (A is designed
from it) and after (the memory grows from it). The official `update_DualGPM` — read from the official file and
executed as it is, on a stand-in `self` holding its attributes — is then fed the same after-experience matrices in
the same order. Compared per experience and layer: the memory's dimension and kind, the principal angles between
the official basis and clpeft's, and between the official design of A (the official statements: project the
before-experience Gram with `feature_mat = F Fᵀ`, top-r left singular vectors / √3) and the A clpeft trained with.

    python reports/parity/official/inflora_subspace.py --official /tmp/inflora --seeds 0 1 2 \
        --out reports/parity/inflora_subspace_runs.json
"""
import argparse
import ast
import json
import math
import time
import types
from pathlib import Path

import numpy as np
import torch


def official_update(path: Path):
    """The official `update_DualGPM`, compiled from its source (its `print` calls silenced)."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "update_DualGPM")
    namespace = {"np": np, "print": lambda *a, **k: None}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace["update_DualGPM"]


def max_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Largest principal angle (rad) between the column spans of a and b (same number of columns)."""
    qa, qb = np.linalg.qr(a)[0], np.linalg.qr(b)[0]
    s = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1.0, 1.0)
    return float(np.arccos(s.min()))


def clpeft_side(seed: int, epochs: int) -> dict:
    from clpeft.config import load_scenario, resolve
    from clpeft.run import run
    from clpeft.strategies.inflora import InfLoRA

    record = {"before": [], "after": [], "A": [], "bases": [], "kinds": []}
    original_grams, original_update = InfLoRA._input_grams, InfLoRA.after_experience

    def grams(self):
        out = original_grams(self)
        phase = "after" if getattr(self, "_parity_trained", False) else "before"
        record[phase].append([g.numpy().copy() for g in out])
        return out

    def after_experience(self):
        self._parity_trained = True
        record["A"].append([layer.instances[self.names[-1]].lora_A[0].detach().double().numpy().copy()
                            for layer in self.pet.layers.values()])
        original_update(self)
        self._parity_trained = False
        record["bases"].append([b.numpy().copy() for b in self.memory.bases])
        record["kinds"].append(list(self.memory.kinds))

    InfLoRA._input_grams, InfLoRA.after_experience = grams, after_experience
    try:
        scenario = load_scenario("digits_b0_inc2")
        config = resolve(scenario, strategy="inflora", seed=seed,
                         overrides={"train": {"epochs": epochs}, "stream": {"class_order": list(range(10))}})
        results = run(config)
    finally:
        InfLoRA._input_grams, InfLoRA.after_experience = original_grams, original_update
    record["A_T"] = results["metrics"]["final_accuracy"]
    options = InfLoRA.parse_options(config.options)
    record["settings"] = {"lamb": options.lamb, "lame": options.lame,
                          "rank": config.pet_settings["rank"], "n_experiences": config.stream.n_experiences}
    return record


def compare(record: dict, update) -> list[dict]:
    s = record["settings"]
    me = types.SimpleNamespace(lamb=s["lamb"], lame=s["lame"], total_sessions=s["n_experiences"], _cur_task=0,
                               feature_list=[], project_type=[])
    rows = []
    for t in range(s["n_experiences"]):
        # the official design of A before experience t, from its memory after t-1
        design = []
        for i, C in enumerate(record["before"][t]):
            if t == 0:
                projected = C
            else:
                F = me.feature_list[i] @ me.feature_list[i].T
                projected = C - F @ C if me.project_type[i] == "remove" else F @ C
            U = np.linalg.svd(projected, full_matrices=False)[0]
            design.append(U[:, : s["rank"]].T / math.sqrt(3))
        me._cur_task = t
        update(me, [C.copy() for C in record["after"][t]])
        for i in range(len(record["after"][t])):
            ours, theirs = record["bases"][t][i], me.feature_list[i]
            rows.append({"experience": t, "layer": i,
                         "dim_official": int(theirs.shape[1]), "dim_clpeft": int(ours.shape[1]),
                         "kind_official": me.project_type[i], "kind_clpeft": record["kinds"][t][i],
                         "basis_angle": max_angle(theirs, ours) if theirs.shape == ours.shape else None,
                         "A_angle": max_angle(design[i].T, record["A"][t][i].T),
                         "A_norm_ratio": float(np.linalg.norm(record["A"][t][i]) / np.linalg.norm(design[i]))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default="/tmp/inflora", help="checkout of liangyanshuo/InfLoRA")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    update = official_update(Path(args.official) / "methods" / "inflora.py")
    out = {"official": "liangyanshuo/InfLoRA methods/inflora.py update_DualGPM", "threads": torch.get_num_threads(),
           "epochs": args.epochs, "seeds": {}}
    for seed in args.seeds:
        start = time.time()
        record = clpeft_side(seed, args.epochs)
        rows = compare(record, update)
        out["seeds"][str(seed)] = {"A_T_clpeft": record["A_T"], "rows": rows,
                                   "seconds": round(time.time() - start, 1)}
        worst = max(r["basis_angle"] or 0.0 for r in rows)
        print(f"seed {seed}: dims equal {all(r['dim_official'] == r['dim_clpeft'] for r in rows)}, kinds equal "
              f"{all(r['kind_official'] == r['kind_clpeft'] for r in rows)}, max basis angle {worst:.2e}, "
              f"max A angle {max(r['A_angle'] for r in rows):.2e}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
