"""Memory and time of the class statistics behind APER, RanPAC and SLCA as the problem grows.

- RanPAC keeps G = Σ hhᵀ of the M-wide random projection in float64: M² · 8 bytes (800 MB at the paper's
  M = 10,000). Per M: the bytes held, the time to add 1,024 projected features, one ridge solve for
  ``--classes`` classes (Cholesky), and choosing λ among 17 candidates — clpeft's dual rule (one
  eigendecomposition of the held-out split's n × n kernel) against 17 primal M × M solves, the latter timed
  only where it fits in minutes.
- SLCA keeps per-class second moments (C × D × D float64) for its Gaussian class models: bytes per class
  count at ViT-B's D = 768, and the time to add 1,024 features at ``--dim``.
- APER / prototype keep C × D sums only (negligible, listed for completeness).

All on the CPU, where clpeft keeps these statistics (checkpoints hold them too).

    python benchmarks/class_stats_cost.py [--projections 1000 2500 5000 10000] [--json out.json]
"""
import argparse
import json
import time

import torch

from clpeft.models.class_stats import RIDGE_CANDIDATES, ClassStatistics, choose_ridge_lambda, ridge_solve


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def primal_lambda(H, y, classes, fit_fraction=0.8):
    """The direct rule: for every λ, solve (H_fitᵀH_fit + λI) W = H_fitᵀY_fit and score the held-out rows."""
    n_fit = int(fit_fraction * len(H))
    Y = torch.nn.functional.one_hot(y, classes).double()
    G, Q = H[:n_fit].T @ H[:n_fit], H[:n_fit].T @ Y[:n_fit]
    errors = [float(((H[n_fit:] @ ridge_solve(G, Q, lam) - Y[n_fit:]) ** 2).mean()) for lam in RIDGE_CANDIDATES]
    return RIDGE_CANDIDATES[min(range(len(errors)), key=errors.__getitem__)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--projections", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--samples", type=int, default=2000, help="training features of one experience (λ choice)")
    parser.add_argument("--primal-up-to", type=int, default=2500, help="largest M the 17 primal solves are timed at")
    parser.add_argument("--dim", type=int, default=192, help="feature width for the SLCA timing")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    report = {"threads": torch.get_num_threads(), "classes": args.classes, "samples": args.samples, "ranpac": [],
              "slca": [], "aper": []}

    print(f"RanPAC statistics ({args.classes} classes, λ chosen on {args.samples} features, "
          f"{torch.get_num_threads()} threads)")
    print("| M | Gram MB | add 1,024 features s | ridge solve s | λ: dual s | λ: 17 primal solves s | same λ |")
    print("|---|---|---|---|---|---|---|")
    for M in args.projections:
        stats = ClassStatistics(M, args.classes, gram=True)
        H = torch.relu(torch.randn(args.samples, M, generator=g))
        y = torch.randint(0, args.classes, (args.samples,), generator=g)
        add = seconds(lambda: [stats.add(H[i:i + 128], y[i:i + 128]) for i in range(0, 1024, 128)])
        stats.add(H[1024:], y[1024:])
        solve = seconds(lambda: ridge_solve(stats.gram, stats.sums.T, 1e2))
        found = {}
        dual = seconds(lambda: found.setdefault("dual", choose_ridge_lambda(H, y, args.classes)[0]))
        primal = seconds(lambda: found.setdefault("primal", primal_lambda(H.double(), y, args.classes))) \
            if M <= args.primal_up_to else None
        same = None if primal is None else found["dual"] == found["primal"]
        row = {"M": M, "gram_mb": stats.gram.numel() * 8 / 2 ** 20, "add_1024_s": add, "solve_s": solve,
               "lambda_dual_s": dual, "lambda_primal_s": primal, "same_lambda": same}
        report["ranpac"].append(row)
        print(f"| {M:,} | {row['gram_mb']:.0f} | {add:.3f} | {solve:.2f} | {dual:.2f} | "
              f"{'—' if primal is None else f'{primal:.2f}'} | {'—' if same is None else same} |")
        del stats, H

    print("\nSLCA per-class second moments (float64)")
    print("| classes | MB at D = 768 | MB at D = --dim | add 1,024 features s (D = --dim) |")
    print("|---|---|---|---|")
    for C in (10, 100, 200, 1000):
        per_class_768 = 768 * 768 * 8 / 2 ** 20
        add = None
        if C <= 200:
            stats = ClassStatistics(args.dim, C, class_second_moments=True)
            H = torch.randn(1024, args.dim, generator=g)
            y = torch.randint(0, C, (1024,), generator=g)
            add = seconds(lambda: [stats.add(H[i:i + 128], y[i:i + 128]) for i in range(0, 1024, 128)])
        row = {"classes": C, "mb_d768": C * per_class_768, "mb_dim": C * args.dim ** 2 * 8 / 2 ** 20, "add_1024_s": add}
        report["slca"].append(row)
        print(f"| {C:,} | {row['mb_d768']:.0f} | {row['mb_dim']:.1f} | {'—' if add is None else f'{add:.3f}'} |")

    for C in (100, 1000):
        report["aper"].append({"classes": C, "mb_d1536": C * 1536 * 8 / 2 ** 20})
    print("\nAPER / prototype: class sums only — "
          + ", ".join(f"{r['mb_d1536']:.1f} MB at {r['classes']:,} classes × 1,536" for r in report["aper"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
