"""InfLoRA's and SD-LoRA's cost as the experiences add LoRAs: a training step (forward + backward through the
summed bank) and a prediction, each against the same strategy with one LoRA (plain LoRA), with 1, 5, 10 and 20
experiences; and what each experience adds to the stored state (LoRA pairs, InfLoRA's subspace bases, SD-LoRA's
magnitudes), and with --memory the peak resident memory of one training step and one prediction in a fresh
process per bank size. Both sum every experience's LoRA in each forward (the official codes do too), so the step cost grows
with the bank; the stored state grows linearly.

The real strategies on the small ViT (28 px, LoRA rank 10 on every block's qkv; InfLoRA K,V, SD-LoRA Q,V) with
random increments (speed does not depend on their values).

    python benchmarks/lora_tier_cost.py [--rounds 7] [--device cpu] [--batch 64] [--memory]
"""
import subprocess
import sys
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


def peak_rss_mb(name: str, experiences: int, batch: int) -> float:
    """Peak resident memory of a fresh process that builds the bank and runs one training step and one prediction
    (a process each, so one count's peak does not hide another's)."""
    code = (f"import sys; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r}); "
            f"import lora_tier_cost as b; b.one_step({name!r}, {experiences}, {batch}); "
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    # VmHWM belongs to the new address space (getrusage's ru_maxrss would carry the parent's peak across exec)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def one_step(name: str, experiences: int, batch: int) -> None:
    step, predict, *_ = runners(name, experiences, batch, "cpu")
    step()
    predict()


def runners(name: str, experiences: int, batch: int, device: str):
    """(train step, prediction, pet, strategy) of a bank of ``experiences`` LoRAs on one fixed batch."""
    model, pet, strategy, dev = strategy_with_bank(name, experiences, device)
    x = torch.rand(batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    params = list(strategy.trainable_parameters())
    for p in params:
        p.requires_grad_(True)

    def step():
        F.cross_entropy(strategy.training_logits(x), y).backward()
        for p in params:
            p.grad = None

    @torch.no_grad()
    def predict():
        strategy.predict(x)

    return step, predict, pet, strategy, dev


def main():
    parser = batch_parser()
    parser.add_argument("--memory", action="store_true", help="also the peak resident memory per bank size (CPU)")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, vit_tiny_fmnist_scratch 28 px, "
          "rank 10 on every block's qkv; each bank timed interleaved with a one-LoRA bank in the same rounds")
    for name in ("inflora", "sd_lora"):
        step1, predict1, _, _, _ = runners(name, 1, args.batch, args.device)
        for experiences in BANK_SIZES:
            step, predict, pet, strategy, dev = runners(name, experiences, args.batch, args.device)
            medians, _ = interleaved({"step": step, "step1": step1, "predict": predict, "predict1": predict1},
                                     args.rounds, dev)
            memory = f", peak RSS {peak_rss_mb(name, experiences, args.batch):.0f} MB" if args.memory else ""
            print(f"{name}: {experiences:2d} experiences: train step {medians['step'] * 1e3:7.1f} ms "
                  f"({medians['step'] / medians['step1']:.2f}× one LoRA), predict {medians['predict'] * 1e3:7.1f} ms "
                  f"({medians['predict'] / medians['predict1']:.2f}×), stored state "
                  f"{stored_bytes(name, pet, strategy) / 1e6:.2f} MB" + memory, flush=True)


if __name__ == "__main__":
    main()
