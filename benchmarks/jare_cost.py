"""JARe's evaluation cost as the bank grows: predict (query forward + per-sample retrieval + one forward with
each sample's top-4 increments) / a plain forward, with 1, 5, 10 and 20 experiences of 4 slots each.
Target: sub-linear growth (the sparse bank computes only each sample's k increments, so only the key
comparison grows with the bank).

The real strategy's ``predict`` on the small ViT (28 px, LoRA rank 8 on all 6 attention projections) and on
ViT-S/16 at 224 px; random keys and increments (speed does not depend on their values).

    python benchmarks/jare_cost.py [--rounds 7] [--device cpu] [--batch 64]
"""
import warnings

import torch

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
BANK_SIZES = (1, 5, 10, 20)


def grow_bank(strategy, experiences: int, generator: torch.Generator | None = None) -> None:
    """Random keys and fresh slots for ``experiences`` experiences, as key fitting and training add them (the cost of a
    forward does not depend on their values)."""
    o, dim = strategy.options, strategy.model.backbone.num_features
    for e in range(experiences):
        strategy.keys.append(torch.randn(o.groups, o.slots, dim // o.groups, generator=generator))
        strategy.slot_names.append([strategy.add_pet_instance(f"e{e}s{p}") for p in range(o.slots)])
    strategy.pet.activate(None)


def strategy_with_bank(backbone: str, size: int, experiences: int, device: str):
    from clpeft.config import resolve
    from clpeft.run import build

    scenario = {"name": "bench", "stream": {"dataset": "digits", "n_experiences": 5},
                "model": {"backbone": backbone, "pretrained": False, "kwargs": {} if size == 28 else {"img_size": size}},
                "strategies": {"jare": {"pet": "lora", "pet_settings": {"targets": ["blocks.*.attn.proj"], "rank": 8, "alpha": 8.0}}}}
    _, model, pet, strategy, dev = build(resolve(scenario, strategy="jare", device=device))
    grow_bank(strategy, experiences, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name in pet.names:
            for p in pet.parameters(name):
                p.normal_(0, 0.02)
    model.head.ensure_classes(model.head.num_classes)
    model.to(dev).eval()
    return model, pet, strategy, dev


def main():
    parser = batch_parser()
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, 4 slots per experience, top-4")
    for backbone, size, channels in [("vit_tiny_fmnist_scratch", 28, 1), ("vit_small_patch16_224", 224, 3)]:
        batch = args.batch if size == 28 else max(1, args.batch // 8)
        ratios = {}
        for experiences in BANK_SIZES:
            model, pet, strategy, dev = strategy_with_bank(backbone, size, experiences, args.device)
            x = torch.rand(batch, channels, size, size, device=dev)

            @torch.no_grad()
            def plain():
                with pet.using(None):
                    model(x)

            @torch.no_grad()
            def jare():
                strategy.predict(x)

            medians, _ = interleaved({"plain": plain, "jare": jare}, args.rounds, dev)
            ratios[experiences] = medians["jare"] / medians["plain"]
            print(f"{backbone} batch {batch}: {experiences:2d} experiences ({4 * experiences:2d} slots): forward "
                  f"{medians['plain'] * 1e3:7.1f} ms, predict {medians['jare'] * 1e3:7.1f} ms, ratio {ratios[experiences]:.2f}", flush=True)
        growth = ratios[BANK_SIZES[-1]] / ratios[BANK_SIZES[0]]
        print(f"  cost growth from 1 to {BANK_SIZES[-1]} experiences: {growth:.2f}× (linear would be {BANK_SIZES[-1]}×; "
              f"target: sub-linear)")


if __name__ == "__main__":
    main()
