"""LAME's overhead per test batch: (forward + LAME) / forward at batch 64 (target ≤ 1.1×).

Forward = the model's features and logits for the batch; LAME = affinities + the bound-optimisation
loop at the official settings (rbf, k = 5, up to 100 steps). Measured on the tiny ViT (28 px) and on
ViT-S/16 at 224 px, 100 classes, medians of interleaved rounds in one process.

    python benchmarks/lame_cost.py [--rounds 7] [--device cpu] [--batch 64]
"""
import statistics
import warnings

import torch

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")


def main():
    from clpeft.evaluation.lame import LAMEConfig, corrected_logits
    from clpeft.models.continual_model import build_model
    from clpeft.streams.datasets import InputSpec

    parser = batch_parser()
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"{torch.get_num_threads()} threads, device {device}, batch {args.batch}, 100 classes")
    for backbone, spec in [("vit_tiny_fmnist_scratch", InputSpec(1, 28)), ("vit_small_patch16_224", InputSpec(3, 224))]:
        model = build_model(backbone, 100, spec, pretrained=False).to(device).eval()
        model.head.ensure_classes(100)
        model.to(device)
        x = torch.rand(args.batch, spec.channels, spec.size, spec.size, device=device)
        results = {}
        for affinity in ("rbf", "knn", "linear"):
            cfg = LAMEConfig(affinity=affinity)

            @torch.no_grad()
            def forward():
                f = model.features(x)
                return model.head(f), f

            @torch.no_grad()
            def forward_lame():
                logits, f = forward()
                return corrected_logits(logits, f, 100, cfg)

            results[affinity], _ = interleaved({"forward": forward, "forward+lame": forward_lame}, args.rounds, device)
        fwd = statistics.median([m["forward"] for m in results.values()])
        print(f"{backbone}: forward {fwd * 1e3:.1f} ms/batch")
        for affinity, med in results.items():
            print(f"  {affinity:6s} forward+LAME {med['forward+lame'] * 1e3:7.1f} ms  "
                  f"ratio {med['forward+lame'] / med['forward']:.3f}   (target ≤ 1.10)")


if __name__ == "__main__":
    main()
