"""InfLoRA's and SD-LoRA's cost as the experiences add LoRAs: a training step (forward + backward through the
summed bank) and a prediction, each against the same strategy with one LoRA (plain LoRA), with 1, 5, 10 and 20
experiences; and what each experience adds to the stored state (LoRA pairs, InfLoRA's subspace bases, SD-LoRA's
magnitudes). Both sum every experience's LoRA in each forward (the official codes do too), so the step cost grows
with the bank; the stored state grows linearly.

The real strategies on the small ViT (28 px, LoRA rank 10 on every block's qkv; InfLoRA K,V, SD-LoRA Q,V) with
random increments (speed does not depend on their values).

    python benchmarks/lora_tier_cost.py [--rounds 7] [--device cpu] [--batch 64]
"""
import warnings

import torch
import torch.nn.functional as F

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")
BANK_SIZES = (1, 5, 10, 20)
PARTS = {"inflora": "kv", "sd_lora": "qv"}


def strategy_with_bank(name: str, experiences: int, device: str):
    from clpeft.config import resolve
    from clpeft.run import build

    scenario = {"name": "bench", "stream": {"dataset": "digits", "n_experiences": 5},
                "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False},
                "strategies": {name: {"pet": "lora", "pet_settings": {"blocks": None, "parts": PARTS[name], "rank": 10,
                                                                       "alpha": 10.0}}}}
    _, model, pet, strategy, dev = build(resolve(scenario, strategy=name, device=device))
    strategy.n_experiences = max(BANK_SIZES)  # the bank is filled here, not by a stream
    strategy.setup()
    pet.remove("default")
    for e in range(experiences):
        pet.add(f"e{e}")
        strategy.names.append(f"e{e}")
        with torch.no_grad():
            for p in pet.parameters(f"e{e}"):
                p.normal_(0, 0.02)
        if name == "sd_lora" and e < experiences - 1:
            strategy._as_directions([f"e{e}"])
    model.head.grow(10)
    model.to(dev)
    return model, pet, strategy, dev


def stored_bytes(name: str, pet, strategy) -> int:
    """float32 LoRA pairs, plus SD-LoRA's magnitudes or InfLoRA's bases at their bound (≤ D/2 float64 columns per
    layer, whatever the number of experiences)."""
    lora = sum(pet.num_parameters(n) for n in strategy.names) * 4
    if name == "inflora":
        return lora + sum(layer.in_features ** 2 // 2 for layer in pet.layers.values()) * 8
    return lora + len(strategy.names) * 4


def main():
    parser = batch_parser()
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, vit_tiny_fmnist_scratch 28 px, "
          "rank 10 on every block's qkv")
    for name in ("inflora", "sd_lora"):
        base = {}
        for experiences in BANK_SIZES:
            model, pet, strategy, dev = strategy_with_bank(name, experiences, args.device)
            x = torch.rand(args.batch, 1, 28, 28, device=dev)
            y = torch.randint(0, 10, (args.batch,), device=dev)
            params = [p for p in strategy.trainable_parameters()]
            for p in params:
                p.requires_grad_(True)

            def step():
                loss = F.cross_entropy(strategy.training_logits(x), y)
                loss.backward()
                for p in params:
                    p.grad = None

            @torch.no_grad()
            def predict():
                strategy.predict(x)

            medians, _ = interleaved({"step": step, "predict": predict}, args.rounds, dev)
            if experiences == 1:
                base = medians
            print(f"{name}: {experiences:2d} experiences: train step {medians['step'] * 1e3:7.1f} ms "
                  f"({medians['step'] / base['step']:.2f}× one LoRA), predict {medians['predict'] * 1e3:7.1f} ms "
                  f"({medians['predict'] / base['predict']:.2f}×), stored state {stored_bytes(name, pet, strategy) / 1e6:.2f} MB",
                  flush=True)


if __name__ == "__main__":
    main()
