"""clpeft's training loop vs a bare PyTorch loop vs Avalanche's Naive: same model, data, batches, steps.

All three train the same initial weights (deep copies) with Adam on the same in-memory data for one
epoch; rounds are interleaved and the median epoch time of each is compared. Prints the ratios
(targets: clpeft/bare ≤ 1.05, clpeft/Avalanche Naive ≤ 1.0).

    python benchmarks/overhead.py [--rounds 5] [--device cpu]
"""
import argparse
import copy
import warnings

import torch
import torch.nn.functional as F

from _timing import interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")


def main():
    from avalanche.training import Naive
    from avalanche.training.plugins import EvaluationPlugin

    from clpeft.config import resolve
    from clpeft.run import build
    from clpeft.streams.stream import materialize

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    scenario = {"name": "bench", "stream": {"dataset": "mnist5k", "n_experiences": 1},
                "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
                "train": {"epochs": 1, "lr": 1e-3, "batch_size": args.batch_size}}
    config = resolve(scenario, strategy="finetune", seed=0, device=args.device)
    stream, model, _, strategy, device = build(config)
    exp = stream.train_stream[0]
    model.head.ensure_classes(stream.num_classes)
    init = copy.deepcopy(model.state_dict())
    x_all, y_all = materialize(exp.dataset)

    def bare_epoch():
        model.load_state_dict(init)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(y_all), generator=gen)
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(x)[:, :model.head.num_seen], y)
            loss.backward()
            opt.step()

    def clpeft_epoch():
        model.load_state_dict(init)
        strategy.train(exp)

    naive_model = copy.deepcopy(model)
    naive = Naive(model=naive_model, optimizer=torch.optim.Adam(naive_model.parameters(), lr=1e-3),
                  train_mb_size=args.batch_size, train_epochs=1, device=device, evaluator=EvaluationPlugin())

    def naive_epoch():
        naive_model.load_state_dict(init)
        naive.train(exp)

    runners = {"bare": bare_epoch, "clpeft": clpeft_epoch, "avalanche_naive": naive_epoch}
    med, times = interleaved(runners, args.rounds, device)
    steps = -(-len(y_all) // args.batch_size)
    print(f"device {device}, {torch.get_num_threads()} threads; tiny ViT (678k params), {len(y_all)} samples, "
          f"batch {args.batch_size}, {steps} steps/epoch, median of {args.rounds} interleaved rounds")
    for k, v in med.items():
        print(f"  {k:16s} {v:7.3f} s/epoch  (rounds: {', '.join(f'{t:.3f}' for t in times[k])})")
    print(f"clpeft / bare            = {med['clpeft'] / med['bare']:.3f}   (target ≤ 1.05)")
    print(f"clpeft / avalanche Naive = {med['clpeft'] / med['avalanche_naive']:.3f}   (target ≤ 1.00)")
    print(f"avalanche Naive / bare   = {med['avalanche_naive'] / med['bare']:.3f}")


if __name__ == "__main__":
    main()
