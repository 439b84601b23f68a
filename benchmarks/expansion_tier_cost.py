"""The expansion tier's inference cost as the experiences add adapters, against a single frozen forward of the same
batch, with 1, 5, 10 and 20 adapters, and what each experience adds to the stored state.

- EASE: one prediction (features under every adapter, then the prototype scores, one forward per adapter); the
  multi-pass features batched through the adapter mixture (one forward of B·K rows) instead; stored: an adapter and
  a prototype column per class per experience.
- MOS: one prediction (features under every snapshot, prototypes under snapshot 0, the self-refining choice), with
  the official per-forward pulls of the stored snapshots (``per_block_forward``) and without them (``per_step``);
  stored: a snapshot per experience, the running sums the pulls need, the class covariances.
- HiDe-Prompt: one prediction (the router on the frozen features, then the routed prompt's pass) with 1 to 20
  prompts; stored: a prompt per experience beside the router.

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


def untrained(method: str, entry: dict, device: str, n_experiences: int = 5):
    """(model, pet, strategy, device): ``method`` with its scenario ``entry`` on the random tiny ViT at digits'
    shapes, built and never trained, its head grown to the 10 classes."""
    from clpeft.config import resolve
    from clpeft.run import build

    scenario = {"name": "bench", "stream": {"dataset": "digits", "n_experiences": n_experiences},
                "model": {"backbone": "vit_tiny_fmnist_scratch", "pretrained": False}, "strategies": {method: entry}}
    _, model, pet, strategy, dev = build(resolve(scenario, strategy=method, device=device))
    model.head.grow(10)
    return model, pet, strategy, dev


@torch.no_grad()
def randomise(pet, name: str, generator: torch.Generator) -> None:
    for p in pet.parameters(name):
        p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def ease_with_adapters(adapters: int, device: str):
    model, pet, strategy, dev = untrained("ease", {"pet": "adapter", "pet_settings": ADAPTFORMER}, device)
    g = torch.Generator().manual_seed(0)
    for e in range(adapters):  # the bank is filled here, not by a stream
        name = strategy.add_pet_instance(f"e{e}")
        strategy.names.append(name)
        randomise(pet, name, g)
        k = strategy.protos.add_instance()
        strategy.protos.fill(k, torch.arange(10), torch.randn(10, model.backbone.num_features, generator=g),
                             home=False)
    strategy.protos.home[:] = torch.arange(10) % adapters
    model.to(dev)
    strategy.protos.to(dev)
    pet.activate(None)
    model.eval()
    return model, pet, strategy, dev


def mos_with_snapshots(snapshots: int, device: str, ema_mode: str):
    model, pet, strategy, dev = untrained(
        "mos", {"pet": "adapter", "pet_settings": ADAPTFORMER, "options": {"ema_mode": ema_mode}}, device)
    g = torch.Generator().manual_seed(0)
    strategy.add_pet_instance("current")
    for e in range(snapshots):  # the snapshots are made here, not by a stream
        name = f"e{e}"
        pet.add(name)
        strategy.names.append(name)
        randomise(pet, name, g)
        if ema_mode == "per_block_forward":  # the running sums its pulls read
            state = pet.state_dict(name)
            strategy.prefix_sums.append({k: v + strategy.prefix_sums[-1][k] for k, v in state.items()}
                                        if strategy.prefix_sums else state)
    strategy.prototypes = torch.randn(10, model.backbone.num_features, generator=g)
    strategy.class_task = torch.arange(10) % snapshots
    strategy.stats.add(torch.randn(20, model.backbone.num_features, generator=g), torch.arange(20) % 10)
    model.to(dev)
    strategy.prototypes, strategy.class_task = strategy.prototypes.to(dev), strategy.class_task.to(dev)
    pet.activate(None)
    model.eval()
    return model, pet, strategy, dev


def hide_with_prompts(prompts: int, device: str):
    model, _, strategy, dev = untrained("hide_prompt", {"options": {"pool_size": prompts}}, device,
                                        n_experiences=1)  # no training: any pool fits
    strategy.router.class_task[:] = torch.arange(10) % prompts   # routes over every prompt
    strategy.centroids.fitted[0] = True
    model.to(dev)
    model.eval()
    return model, strategy.pool.pet, strategy, dev


def timed(model, pet, strategy, dev, batch: int, rounds: int, batched: bool = False) -> dict:
    """Median seconds of one frozen forward, one prediction (and the batched multi-pass features), interleaved."""
    x = torch.rand(batch, 1, 28, 28, device=dev)

    @torch.no_grad()
    def frozen():
        with pet.using(None):
            model.features(x)

    @torch.no_grad()
    def predict():
        strategy.predict(x)

    @torch.no_grad()
    def multipass_batched():
        strategy.passes(model.adapter(x), strategy.names, batched=True)

    runs = {"frozen": frozen, "predict": predict, **({"batched": multipass_batched} if batched else {})}
    return interleaved(runs, rounds, dev)[0]


def main():
    args = batch_parser().parse_args()
    print(f"{torch.get_num_threads()} threads, device {args.device}, batch {args.batch}, vit_tiny_fmnist_scratch 28 px, "
          "AdaptFormer (bottleneck 16) in every block; each bank timed interleaved with one frozen forward")
    for adapters in BANK_SIZES:
        model, pet, strategy, dev = ease_with_adapters(adapters, args.device)
        medians = timed(model, pet, strategy, dev, args.batch, args.rounds, batched=True)
        stored = sum(pet.num_parameters(n) for n in strategy.names) * 4 + strategy.protos.prototypes.numel() * 4
        print(f"ease: {adapters:2d} adapters: {adapters:2d} passes per test sample, predict "
              f"{medians['predict'] * 1e3:7.1f} ms ({medians['predict'] / medians['frozen']:5.1f}× one frozen forward), "
              f"features batched through the adapter mixture {medians['batched'] * 1e3:7.1f} ms "
              f"({medians['batched'] / medians['frozen']:5.1f}×), stored state {stored / 1e6:.2f} MB", flush=True)
    for snapshots in BANK_SIZES:
        ratio, stored = {}, {}
        for mode in ("per_block_forward", "per_step"):
            model, pet, strategy, dev = mos_with_snapshots(snapshots, args.device, mode)
            medians = timed(model, pet, strategy, dev, args.batch, args.rounds)
            ratio[mode] = medians["predict"] / medians["frozen"], medians["predict"]
            sums = sum(v.numel() for s_ in strategy.prefix_sums for v in s_.values())
            stored[mode] = 4 * (sum(pet.num_parameters(n) for n in pet.names) + sums + strategy.prototypes.numel())
        covariances = strategy.stats.second.numel() * 8
        print(f"mos:  {snapshots:2d} snapshots: {snapshots:2d} passes per test sample, predict "
              f"{ratio['per_block_forward'][1] * 1e3:7.1f} ms ({ratio['per_block_forward'][0]:5.1f}× one frozen forward) "
              f"with the official per-forward pulls, {ratio['per_step'][1] * 1e3:7.1f} ms ({ratio['per_step'][0]:5.1f}×) "
              f"without; stored adapters and sums {stored['per_block_forward'] / 1e6:.2f} MB "
              f"({stored['per_step'] / 1e6:.2f} MB per_step), class covariances {covariances / 1e6:.2f} MB", flush=True)
    for prompts in BANK_SIZES:
        model, pool_pet, strategy, dev = hide_with_prompts(prompts, args.device)
        medians = timed(model, pool_pet, strategy, dev, args.batch, args.rounds)
        stored = 4 * (sum(pool_pet.num_parameters(n) for n in pool_pet.names) +
                      sum(p.numel() for p in strategy.router.parameters()))
        print(f"hide: {prompts:2d} prompts: 2 passes per test sample, predict {medians['predict'] * 1e3:7.1f} ms "
              f"({medians['predict'] / medians['frozen']:5.1f}× one frozen forward), stored prompts and router "
              f"{stored / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
