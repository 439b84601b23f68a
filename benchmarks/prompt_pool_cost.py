"""Prompt-pool cost on a stock timm ViT: the query forward + prompted forward against one frozen forward, and
what per-sample selection costs against every sample taking the same prompts.

Prompt-pool methods (L2P, DualPrompt, CODA-Prompt) run the frozen backbone once for the query and once more
with the chosen prompts, so inference costs about two frozen forwards; the question is what clpeft adds on top.
Variants, each timed as medians of interleaved rounds in one process (inference, and a training step =
prompted forward + backward into prompts and keys):

- ``frozen``: one forward of the frozen ViT (the reference);
- ``query``: the query forward alone (every prompt off) — the part shared by all three methods;
- ``l2p``: query + top-5 of a 30-prompt pool, each sample its own 5 prompts side by side (L2P++ settings);
- ``l2p_shared``: the same with every sample given sample 0's prompts — the per-sample selection overhead
  is ``l2p / l2p_shared``;
- ``coda``: query + attention-weighted sum of 100 components in blocks 0-4 (CODA-P settings).

CPU default: ViT-S/16 at 224, batch 8 (pretrained=False: speed does not depend on weights); ``--device cuda``
for ViT-B/16 at batch 64 with bf16 autocast.

    python benchmarks/prompt_pool_cost.py [--device cuda]
"""
import json
import warnings

import torch

from _timing import batch_parser, interleaved  # noqa: E402 - benchmarks/ is on sys.path when run as a script

warnings.filterwarnings("ignore")


def main():
    parser = batch_parser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.model is None:
        args.model = "vit_base_patch16_224" if device.type == "cuda" else "vit_small_patch16_224"
    if args.batch == 64 and device.type == "cpu":
        args.batch = 8
    amp = device.type == "cuda"
    torch.manual_seed(0)
    import timm

    from clpeft.pet.pool import PromptPool

    def backbone():
        model = timm.create_model(args.model, pretrained=False, num_classes=0).to(device).eval()
        return model.requires_grad_(False)

    dim = backbone().num_features
    frozen = backbone()
    l2p_model = backbone()
    l2p = PromptPool(l2p_model, 30, 20, [0], dim).to(device)
    coda_model = backbone()
    coda = PromptPool(coda_model, 100, 8, [0, 1, 2, 3, 4], dim, attention=True).to(device)
    x = torch.randn(args.batch, 3, 224, 224, device=device)

    def ctx():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def query(model, pool):
        with torch.no_grad(), pool.off(), ctx():
            return model(x).float()

    def l2p_step(shared: bool, train: bool):
        def fn():
            index, sim = l2p.top_k(query(l2p_model, l2p), 5)
            if shared:
                index = index[:1].expand_as(index)
            with torch.set_grad_enabled(train), l2p.concatenated(index), ctx():
                out = l2p_model(x)
            if train:
                (out.float().pow(2).mean() + (1 - sim.gather(1, index)).sum()).backward()
                l2p.zero_grad(set_to_none=True)
                l2p_model.zero_grad(set_to_none=True)
        return fn

    def coda_step(train: bool):
        def fn():
            weights = coda.similarity(query(coda_model, coda))
            with torch.set_grad_enabled(train), coda.weighted(weights), ctx():
                out = coda_model(x)
            if train:
                out.float().pow(2).mean().backward()
                coda.zero_grad(set_to_none=True)
                coda_model.zero_grad(set_to_none=True)
        return fn

    def frozen_fn():
        with torch.no_grad(), ctx():
            frozen(x)

    def query_fn():
        query(l2p_model, l2p)

    report = {"model": args.model, "batch": args.batch, "device": args.device, "amp": amp}
    for mode, train in (("inference", False), ("training step", True)):
        runners = {"frozen": frozen_fn, "query": query_fn, "l2p": l2p_step(False, train),
                   "l2p_shared": l2p_step(True, train), "coda": coda_step(train)}
        medians, _ = interleaved(runners, args.rounds, device)
        base = medians["frozen"]
        report[mode] = {k: {"seconds": round(v, 5), "x_frozen": round(v / base, 3)} for k, v in medians.items()}
        report[mode]["per_sample_selection_overhead"] = round(medians["l2p"] / medians["l2p_shared"], 3)
        print(f"{mode} ({args.model}, batch {args.batch}, {args.device}):")
        for k, v in medians.items():
            print(f"  {k:11s} {1000 * v:8.1f} ms  {v / base:5.2f}× frozen forward")
        print(f"  per-sample selection / shared prompts: {report[mode]['per_sample_selection_overhead']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
