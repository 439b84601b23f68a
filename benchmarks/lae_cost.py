"""LAE's cost: its training epoch vs a bare PyTorch loop doing the same work, and its ensemble evaluation.

Training: experience 1 of mnist5k (the offline PET exists, so every step also does the EMA), one
epoch, Adapter PET; the bare loop does the same forward, CE over the current classes, backward, Adam
step over online PET + heads and EMA over every PET tensor. Rounds are interleaved; medians compared
(target ≤ 1.05×).

Evaluation: ``strategy.predict`` (online + offline expert, per-class max of softmaxes, backbone
shared up to the first PET block) vs one forward with the online PET, on the tiny ViT and on a
ViT-S/16 at 224 px with PET in blocks 0-4 (target ≤ 2.05×); two full forwards are shown for reference.

    python benchmarks/lae_cost.py [--rounds 5] [--device cpu]
"""
import argparse
import copy
import warnings

import torch
import torch.nn.functional as F

from _timing import interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")


def lae_setup(backbone: str, batch_size: int, device: str, pet: str = "adapter", train: bool = True):
    from clpeft.config import resolve
    from clpeft.run import build

    scenario = {"name": "bench", "stream": {"dataset": "mnist5k", "n_experiences": 5},
                "model": {"backbone": backbone, "pretrained": False},
                "train": {"epochs": 1, "lr": 1e-3, "batch_size": batch_size},
                "strategies": {"lae": {"options": {"pet_warmup_epochs": 0}}}}
    stream, model, pet_ctl, strategy, dev = build(resolve(scenario, strategy="lae", pet=pet, seed=0, device=device))
    if train:
        strategy.train(stream.train_stream[0])
        strategy.train(stream.train_stream[1])  # creates the offline PET; later rounds replay this experience
    else:  # evaluation cost does not depend on trained values: heads for 4 classes and an offline copy
        from clpeft.strategies.lae import OFFLINE

        model.head.ensure_classes(4)
        model.to(dev)
        pet_ctl.add(OFFLINE, copy_from="default")
    return stream, model, pet_ctl, strategy, dev


def training_ratio(args):
    from clpeft.streams.stream import materialize
    from clpeft.strategies.lae import OFFLINE

    stream, model, pet, strategy, device = lae_setup("vit_tiny_fmnist_scratch", args.batch_size, args.device)
    exp = stream.train_stream[1]
    start, end = min(exp.classes_in_this_experience), max(exp.classes_in_this_experience) + 1
    snapshot = copy.deepcopy(model.state_dict())
    x_all, y_all = materialize(exp.dataset)
    decay = strategy.decay

    def bare_epoch():
        model.load_state_dict(snapshot)
        model.train()
        online = pet.named_parameters("default")
        offline = pet.named_parameters(OFFLINE)
        opt = torch.optim.Adam(list(online.values()) + list(model.head.parameters()), lr=1e-3)
        perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            x, y = x_all[idx].to(device), y_all[idx].to(device)
            opt.zero_grad()
            F.cross_entropy(model(x)[:, start:end], y - start).backward()
            opt.step()
            with torch.no_grad():
                for k, p_off in offline.items():
                    p_off.mul_(decay).add_(online[k], alpha=1 - decay)

    def lae_epoch():
        model.load_state_dict(snapshot)
        strategy.train(exp)

    med, _ = interleaved({"bare": bare_epoch, "lae": lae_epoch}, args.rounds, device)
    steps = -(-len(y_all) // args.batch_size)
    print(f"training: tiny ViT + adapter, {len(y_all)} samples, batch {args.batch_size}, {steps} steps/epoch, "
          f"median of {args.rounds} interleaved rounds on {device}")
    print(f"  bare {med['bare']:.3f} s/epoch, lae {med['lae']:.3f} s/epoch")
    print(f"  lae / bare = {med['lae'] / med['bare']:.3f}   (target ≤ 1.05)")


def eval_ratio(args, backbone: str, batch: int, label: str):
    from clpeft.strategies.lae import OFFLINE

    stream, model, pet, strategy, device = lae_setup(backbone, 64, args.device, train=False)
    model.eval()
    if backbone == "vit_tiny_fmnist_scratch":
        x = next(stream.eval_batches(batch, seed=0))[0].to(device)
    else:
        x = torch.rand(batch, 1, 28, 28, device=device)  # the input adapter resizes to 224 on the fly

    @torch.no_grad()
    def single():
        model(x)

    @torch.no_grad()
    def ensemble():
        strategy.predict(x)

    @torch.no_grad()
    def two_full():
        with pet.using("default"):
            a = F.softmax(model(x), -1)
        with pet.using(OFFLINE):
            b = F.softmax(model(x), -1)
        torch.maximum(a, b)

    med, _ = interleaved({"single": single, "ensemble": ensemble, "two_full": two_full}, args.rounds, device)
    print(f"evaluation: {label}, batch {batch}, trunk up to block {strategy.shared.first_block}")
    print(f"  single {med['single'] * 1e3:.1f} ms, ensemble {med['ensemble'] * 1e3:.1f} ms, "
          f"two full forwards {med['two_full'] * 1e3:.1f} ms")
    print(f"  ensemble / single = {med['ensemble'] / med['single']:.3f}   (target ≤ 2.05); "
          f"two full forwards / single = {med['two_full'] / med['single']:.3f}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vit-s-batch", type=int, default=8)
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads")
    training_ratio(args)
    eval_ratio(args, "vit_tiny_fmnist_scratch", 256, "tiny ViT (28 px, 6 blocks), adapter in blocks 0-4")
    eval_ratio(args, "vit_small_patch16_224", args.vit_s_batch, "ViT-S/16 at 224 px, adapter in blocks 0-4")


if __name__ == "__main__":
    main()
