"""PET cost on a stock timm ViT: forward and forward+backward time vs the frozen model and full fine-tuning.

CPU default: ViT-S/16 at 224, batch 8 (pretrained=False: speed does not depend on weights). With a
GPU: ViT-B/16, bf16 autocast, batch 64. PET in blocks 0-4 at LAE's settings. Targets: forward with
PET ≤ 1.10× frozen; PET training faster and lighter than full fine-tuning. Times are medians of
interleaved rounds in one process; peak memory of a training step is measured in a fresh
subprocess per variant (CPU: max RSS; GPU: max allocated).

    python benchmarks/pet_overhead.py [--device cuda]
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")
VARIANTS = ["frozen", "full_finetune", "adapter", "lora", "prefix", "prompt"]


def make(variant, name, device):
    import timm

    from clpeft.pet import inject_named_pet

    model = timm.create_model(name, pretrained=False, num_classes=0).to(device)
    if variant in ("adapter", "lora", "prefix", "prompt"):
        inject_named_pet(model, variant)
        model.to(device)
    elif variant == "frozen":
        model.requires_grad_(False)
    return model


def step(model, x, train, device, amp):
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else torch.autocast(device.type, enabled=False)
    if train:
        with ctx:
            out = model(x)
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
    else:
        with torch.no_grad(), ctx:
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(variant, args) -> float:
    """One training step in a fresh process; returns its peak memory in MiB."""
    code = (f"import sys; sys.argv=['x','--child','{variant}','--device','{args.device}','--model','{args.model}',"
            f"'--batch','{args.batch}'] + (['--amp'] if {args.amp} else []); "
            "import runpy; runpy.run_path('benchmarks/pet_overhead.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--model")
    p.add_argument("--batch", type=int)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--child")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.model = args.model or ("vit_base_patch16_224" if gpu else "vit_small_patch16_224")
    args.batch = args.batch or (64 if gpu else 8)
    args.amp = args.amp or gpu
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    if args.child:
        model = make(args.child, args.model, device)
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        step(model, x, args.child != "frozen", device, args.amp)
        peak = torch.cuda.max_memory_allocated() / 2**20 if gpu else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_mb": peak}))
        return
    models = {v: make(v, args.model, device) for v in VARIANTS}
    for m in models.values():
        m.eval()
    fwd = {v: [] for v in VARIANTS}
    train = {v: [] for v in VARIANTS if v != "frozen"}
    for r in range(args.rounds + 1):
        for v, m in models.items():
            t = time.perf_counter()
            step(m, x, False, device, args.amp)
            if r:
                fwd[v].append(time.perf_counter() - t)
            if v != "frozen":
                t = time.perf_counter()
                step(m, x, True, device, args.amp)
                if r:
                    train[v].append(time.perf_counter() - t)
    f = {v: statistics.median(t) for v, t in fwd.items()}
    tr = {v: statistics.median(t) for v, t in train.items()}
    mem = {v: peak_memory(v, args) for v in VARIANTS if v != "frozen"}
    name = torch.cuda.get_device_name(device) if gpu else f"cpu, {torch.get_num_threads()} threads"
    print(f"{args.model}, batch {args.batch}, {'bf16' if args.amp else 'fp32'}, {name}; median of {args.rounds} rounds")
    print(f"{'variant':14s} {'fwd s':>8s} {'fwd/frozen':>10s} {'train s':>8s} {'train/full':>10s} {'peak MiB':>9s} {'mem/full':>8s}")
    for v in VARIANTS:
        t = tr.get(v)
        print(f"{v:14s} {f[v]:8.4f} {f[v] / f['frozen']:10.3f} " + (
            f"{t:8.4f} {t / tr['full_finetune']:10.3f} {mem[v]:9.0f} {mem[v] / mem['full_finetune']:8.3f}" if t else ""))


if __name__ == "__main__":
    main()
