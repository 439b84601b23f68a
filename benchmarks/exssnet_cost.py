"""ExSSNeT's costs, each as a ratio to the plain forward of the same model, measured in one run:

- masked forward: one task's cached binary mask applied to every Linear/Conv2d (+ per-task BN) vs
  the unmasked model (target ≤ 1.3×); also with the live top-k of training (scores still learning);
- class-IL task inference per sample with T learned masks (T forwards + the entropy choice), and
  SupSup's one-shot variant (a superposed forward and backward, then the chosen mask's forward).

    python benchmarks/exssnet_cost.py [--rounds 7] [--device cpu] [--batch 64] [--tasks 5]
"""
import warnings

import torch

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")


def main():
    from clpeft.models.continual_model import build_model
    from clpeft.pet import SupermaskConfig, inject_pet
    from clpeft.pet.supermask import SupermaskLayer
    from clpeft.strategies.exssnet import entropy
    from clpeft.streams.datasets import InputSpec

    parser = batch_parser()
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    T = args.tasks
    print(f"{torch.get_num_threads()} threads, device {device}, batch {args.batch}, {T} learned masks")
    for backbone, spec, kept in [("lenet", InputSpec(1, 28), 0.1), ("resnet32", InputSpec(3, 32), 0.5),
                                 ("vit_tiny_fmnist_scratch", InputSpec(1, 28), 0.5)]:
        torch.manual_seed(0)
        model = build_model(backbone, 10 * T, spec, pretrained=False).to(device)
        for _ in range(T):
            model.head.grow(10)
        pet = inject_pet(model.backbone, SupermaskConfig(sparsity_kept=kept), name="task0")
        for t in range(1, T):
            pet.add(f"task{t}")
        model.to(device).eval()
        masked = [layer for layer in pet.layers.values() if isinstance(layer, SupermaskLayer)]
        x = torch.rand(args.batch, spec.channels, spec.size, spec.size, device=device)
        tasks = [f"task{t}" for t in range(T)]

        @torch.no_grad()
        def plain():
            with pet.using(None):
                return model(x)

        @torch.no_grad()
        def live_topk():
            with pet.using("task0"):
                return model(x)

        for layer in masked:
            for t in tasks[1:]:
                layer.freeze(t)

        @torch.no_grad()
        def cached_mask():
            with pet.using("task1"):
                return model(x)

        @torch.no_grad()
        def infer_entropy():
            scores = []
            for t, name in enumerate(tasks):
                with pet.using(name):
                    scores.append(entropy(model(x)[:, 10 * t:10 * t + 10]))
            return torch.stack(scores).argmin(0)

        def infer_oneshot():
            alphas = torch.full((x.shape[0], T), 1.0 / T, device=device, requires_grad=True)
            with pet.mixing(tasks, alphas):
                out = model(x)
            (g,) = torch.autograd.grad(entropy(out).sum(), alphas)
            with torch.no_grad(), pet.using(tasks[0]):
                model(x)
            return g.argmin(1)

        for layer in masked:  # inference runs on finished tasks: every mask cached
            layer.freeze("task0")
        med, _ = interleaved({"plain": plain, "cached": cached_mask, "entropy": infer_entropy,
                              "oneshot": infer_oneshot}, args.rounds, device)
        for layer in masked:  # back to live top-k for task0 (as while its scores train)
            layer.instances["task0"].frozen = None
        live, _ = interleaved({"plain": plain, "live": live_topk}, args.rounds, device)
        base = med["plain"]
        print(f"{backbone}: plain forward {base * 1e3:.2f} ms/batch")
        print(f"  masked forward (cached mask) ratio {med['cached'] / base:.3f}   (target ≤ 1.30)")
        print(f"  masked forward (live top-k)  ratio {live['live'] / live['plain']:.3f}   (training-time forward)")
        print(f"  task inference, entropy      {med['entropy'] / args.batch * 1e6:8.1f} µs/sample  "
              f"ratio {med['entropy'] / base:.2f}× the forward")
        print(f"  task inference, one-shot     {med['oneshot'] / args.batch * 1e6:8.1f} µs/sample  "
              f"ratio {med['oneshot'] / base:.2f}× the forward")


if __name__ == "__main__":
    main()
