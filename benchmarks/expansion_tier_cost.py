"""EASE's inference cost as the experiences add adapters: one prediction (features under every adapter, then the
prototype scores, one forward per adapter) against a single frozen forward of the same batch, with 1, 5, 10 and 20
adapters; the multi-pass features batched through the adapter mixture (one forward of B·K rows) instead; and what each
experience adds to the stored state (an adapter and a prototype column per class).

The real strategy on the small ViT (28 px, an AdaptFormer adapter in every block, bottleneck 16) with random adapters
and prototypes (speed does not depend on their values).

    python benchmarks/expansion_tier_cost.py [--rounds 7] [--device cpu] [--batch 64]
"""
import warnings

import torch

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
BANK_SIZES = (1, 5, 10, 20)
ADAPTFORMER = {"blocks": None, "position": "mlp_residual", "bottleneck": 16, "activation": "relu", "dropout": 0.1,
               "scale": 0.1}


def ease_with_adapters(adapters: int, device: str):
    from clpeft.config import resolve
    from clpeft.run import build

    scenario = {"name": "bench", "stream": {"dataset": "digits", "n_experiences": 5},
                "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
                "strategies": {"ease": {"pet": "adapter", "pet_settings": ADAPTFORMER}}}
    _, model, pet, strategy, dev = build(resolve(scenario, strategy="ease", device=device))
    strategy.setup()
    model.head.grow(10)
    g = torch.Generator().manual_seed(0)
    for e in range(adapters):  # the bank is filled here, not by a stream
        name = strategy.add_pet_instance(f"e{e}")
        strategy.names.append(name)
        with torch.no_grad():
            for p in pet.parameters(name):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        k = strategy.protos.add_instance()
        strategy.protos.fill(k, torch.arange(10), torch.randn(10, model.backbone.num_features, generator=g),
                             home=False)
    strategy.protos.home[:] = torch.arange(10) % adapters
    model.to(dev)
    strategy.protos.to(dev)
    pet.activate(None)
    model.eval()
    return model, pet, strategy, dev


def main():
    args = batch_parser().parse_args()
    print(f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, vit_tiny_fmnist_scratch 28 px, "
          "AdaptFormer (bottleneck 16) in every block; each bank timed interleaved with one frozen forward")
    for adapters in BANK_SIZES:
        model, pet, strategy, dev = ease_with_adapters(adapters, args.device)
        x = torch.rand(args.batch, 1, 28, 28, device=dev)

        @torch.no_grad()
        def frozen():
            with pet.using(None):
                model.features(x)

        @torch.no_grad()
        def predict():
            strategy.predict(x)

        @torch.no_grad()
        def batched():
            strategy.passes(model.adapter(x), strategy.names, batched=True)

        medians, _ = interleaved({"frozen": frozen, "predict": predict, "batched": batched}, args.rounds, dev)
        stored = sum(pet.num_parameters(n) for n in strategy.names) * 4 + strategy.protos.prototypes.numel() * 4
        print(f"ease: {adapters:2d} adapters: {adapters:2d} passes per test sample, predict "
              f"{medians['predict'] * 1e3:7.1f} ms ({medians['predict'] / medians['frozen']:5.1f}× one frozen forward), "
              f"features batched through the adapter mixture {medians['batched'] * 1e3:7.1f} ms "
              f"({medians['batched'] / medians['frozen']:5.1f}×), stored state {stored / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
