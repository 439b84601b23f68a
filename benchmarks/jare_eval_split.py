"""Where JARe's evaluation time goes on a long stream: a JARe bank grown to --experiences experiences (random keys and
fresh slots, no training: cost does not depend on the values) on the long_synthetic ViT, and the time per test sample
of its class-IL prediction, of its task-IL oracle (one forward per experience present in the batch) and of one plain
forward, on 10 test images per experience in batches of 256 as the run evaluates.

    OMP_NUM_THREADS=1 python benchmarks/jare_eval_split.py [--experiences 100]
"""
import argparse
import time

import torch

from clpeft.config import load_scenario, resolve
from clpeft.run import build
from jare_cost import grow_bank  # noqa: E402 - benchmarks/ is on sys.path when run as a script


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiences", type=int, default=100)
    args = p.parse_args()
    torch.manual_seed(0)
    config = resolve(load_scenario("long_synthetic"), strategy="jare", seed=0, device="cpu",
                     overrides={"stream": {"n_experiences": args.experiences}})
    _, model, _, strategy, _ = build(config)
    grow_bank(strategy, args.experiences)
    model.eval()
    n = 10 * args.experiences
    x, task = torch.randn(n, 1, 28, 28), torch.arange(args.experiences).repeat_interleave(10)
    with torch.no_grad():
        for label, f in [("class-IL prediction", lambda xb, tb: strategy.predict(xb)),
                         ("task-IL oracle", strategy.predict_given_task), ("one plain forward", lambda xb, tb: model(xb))]:
            began = time.perf_counter()
            for i in range(0, n, 256):
                f(x[i:i + 256], task[i:i + 256])
            print(f"{label:20s} {1e3 * (time.perf_counter() - began) / n:6.2f} ms per sample "
                  f"({args.experiences} experiences, {torch.get_num_threads()} thread)")


if __name__ == "__main__":
    main()
