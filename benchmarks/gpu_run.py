"""A whole continual-learning run on a GPU, measured: is it bound by compute, or by Python and data?

A 10-task B0-Inc10 run of LAE-Adapter (and finetune, prototype) on ViT-B/16 over data shaped like CIFAR-100
(50,000 train / 10,000 test images of 32 px, upsampled to 224; generated, since the real data cannot be
downloaded here), and the decoding throughput of an ImageNet-R-shaped folder of ~30,000 JPEGs of varied sizes
(generated on the fly). Prints, per run: training and evaluation images/s, the time shares of data loading,
compute, evaluation and checkpointing, and — for the raw timm forward+backward loop at the same batch on the same
device — images/s and model FLOPs utilisation (FLOPs from ``torch.utils.flop_counter``), and the run's training
throughput as a ratio of that loop's.

    python benchmarks/gpu_run.py --device cuda --amp bf16 --batch 64            # on the lent GPU
    python benchmarks/gpu_run.py --tiny --device cpu                            # the same code on tiny shapes
Options under test: --device-augment (uint8 CIFAR on the device, batched crops), --workers N (JPEG decoding
processes), --compile MODE, --fused (fused optimizer), --eval-batch.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import pickle
import time
from pathlib import Path

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="cuda")
parser.add_argument("--amp", default="bf16", choices=["bf16", "off"])
parser.add_argument("--model", default="vit_base_patch16_224")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--eval-batch", type=int, default=512)
parser.add_argument("--epochs", type=int, default=5, help="per experience (LAE's official schedule: 5)")
parser.add_argument("--tasks", type=int, default=10)
parser.add_argument("--strategies", nargs="+", default=["lae", "finetune", "prototype"])
parser.add_argument("--device-augment", action=argparse.BooleanOptionalAction, default=True)
parser.add_argument("--workers", type=int, default=min(16, multiprocessing.cpu_count()))
parser.add_argument("--compile", default="off")
parser.add_argument("--fused", action="store_true")
parser.add_argument("--jpeg-images", type=int, default=30000)
parser.add_argument("--raw-steps", type=int, default=30)
parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200 SXM: 989)")
parser.add_argument("--work", default="runs/gpu_bench")
parser.add_argument("--json", help="write the measurements here")
parser.add_argument("--tiny", action="store_true", help="tiny model and data: check the script on a CPU")
args = parser.parse_args()
if args.tiny:
    args.model, args.tasks, args.epochs, args.batch, args.eval_batch = "vit_tiny_patch16_224", 2, 1, 16, 64
    args.jpeg_images, args.raw_steps, args.workers = 60, 3, min(args.workers, 2)
    args.amp = "off" if args.device == "cpu" else args.amp
MODEL_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2} if args.tiny else {}
IMAGE = 32 if args.tiny else 224
work = Path(args.work)


def cifar_shaped(root: Path, train_per_class: int, test_per_class: int) -> Path:
    folder = root / "cifar-100-python"
    if (folder / "test").exists():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), n)
        base = rng.integers(0, 256, (100, 3072), dtype=np.uint8)  # a texture per class, plus noise: learnable
        data = np.clip(base[labels].astype(np.int16) + rng.integers(-60, 61, (len(labels), 3072)), 0, 255).astype(np.uint8)
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": data, "fine_labels": labels.tolist()}, fh)
    return root


def _jpeg(job):
    path, size, seed = job
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    img = (rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)).repeat(8, 0).repeat(8, 1)
    Image.fromarray(img).save(path, quality=90)


def imagenet_r_shaped(root: Path, n_images: int, classes: int) -> Path:
    base = root / "imagenet-r"
    if (root / "test.txt").exists():
        return root
    rng = np.random.default_rng(1)
    jobs, lines = [], []
    for i in range(n_images):
        c = i % classes
        (base / f"n{c:08d}").mkdir(parents=True, exist_ok=True)
        rel = f"n{c:08d}/{i}.jpg"
        size = (int(rng.integers(24, 80)), int(rng.integers(24, 80))) if args.tiny else \
            (int(rng.integers(200, 800)), int(rng.integers(200, 800)))
        jobs.append((base / rel, size, i))
        lines.append(rel)
    with multiprocessing.Pool(max(1, args.workers)) as pool:
        pool.map(_jpeg, jobs, chunksize=64)
    order = rng.permutation(len(lines))
    cut = int(0.8 * len(lines))
    (root / "train.txt").write_text("\n".join(lines[i] for i in sorted(order[:cut])) + "\n")
    (root / "test.txt").write_text("\n".join(lines[i] for i in sorted(order[cut:])) + "\n")
    return root


class Clock:
    """An Avalanche plugin splitting training time into waiting for data and computing (synchronised)."""

    def __init__(self, device):
        from avalanche.core import SupervisedPlugin

        clock = self

        class Plugin(SupervisedPlugin):
            def before_training_epoch(self, strategy, **kw):
                clock.mark = time.perf_counter()

            def before_training_iteration(self, strategy, **kw):
                now = time.perf_counter()
                clock.data += now - clock.mark
                clock.mark = now

            def after_training_iteration(self, strategy, **kw):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                now = time.perf_counter()
                clock.compute += now - clock.mark
                clock.images += len(strategy.mb_y)
                clock.mark = now

        self.plugin = Plugin()
        self.data = self.compute = 0.0
        self.images = 0
        self.mark = time.perf_counter()


def run_strategy(strategy: str, root: Path) -> dict:
    from clpeft.config import resolve
    from clpeft.run import run

    device = torch.device(args.device)
    scenario = {
        "name": "gpu_bench",
        "stream": {"dataset": "cifar100", "root": str(root), "n_experiences": args.tasks, "image_size": IMAGE,
                   "device_augment": args.device_augment, "class_order_seed": None},
        "model": {"backbone": args.model, "pretrained": False, "kwargs": MODEL_KWARGS, "normalize": False,
                  "head_init_std": 0.001},
        "train": {"epochs": args.epochs, "lr": 0.0028125, "batch_size": args.batch, "eval_batch_size": args.eval_batch,
                  "drop_last": True, "num_workers": args.workers, "pin_memory": device.type == "cuda",
                  "compile": args.compile, "fused_optimizer": args.fused},
        "strategies": {"lae": {"pet": "adapter", "options": {"pet_warmup_epochs": min(3, args.epochs - 1)}},
                       "finetune": {"pet": "adapter"}, "prototype": {}},
        "pets": {"adapter": {"bottleneck": 5, "blocks": [0, 1] if args.tiny else [0, 1, 2, 3, 4]}},
    }
    config = resolve(scenario, strategy=strategy, device=args.device, amp=args.amp)
    clock = Clock(device)
    start = time.perf_counter()
    result = run(config, out_dir=work / "runs" / config.run_id, plugins=[clock.plugin], overwrite=True)
    wall = time.perf_counter() - start
    rt = result["runtime"]
    train_s, eval_s = rt["train_seconds_total"], sum(rt["eval_seconds_per_experience"])
    ckpt_s = sum(rt["checkpoint_seconds_per_experience"])
    tested = sum(result["test_samples"]) * len(result["accuracy_matrix"])
    shares = {"data": clock.data, "compute": clock.compute, "evaluation": eval_s, "checkpoint": ckpt_s}
    shares["other"] = max(0.0, wall - sum(shares.values()))
    return {"strategy": strategy, "final_accuracy": result["metrics"]["final_accuracy"], "wall_seconds": round(wall, 2),
            # a training-free method (prototype) takes no gradient step: no training throughput to speak of
            "train_images_per_s": clock.images / max(train_s, 1e-9) if clock.images else None,
            "compute_images_per_s": clock.images / max(clock.compute, 1e-9) if clock.images else None,
            "eval_images_per_s": tested / max(eval_s, 1e-9),
            "time_share": {k: round(v / wall, 4) for k, v in shares.items()}}


def raw_loop() -> dict:
    """timm forward + backward + AdamW at the same batch and precision, data already on the device; MFU."""
    import timm
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device(args.device)
    model = timm.create_model(args.model, pretrained=False, num_classes=100, **MODEL_KWARGS).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if args.fused else {}))
    x = torch.randn(args.batch, 3, IMAGE, IMAGE, device=device)
    y = torch.randint(0, 100, (args.batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")

    def step():
        with amp:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.raw_steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.raw_steps
    return {"images_per_s": args.batch / seconds, "flops_per_step": flops,
            "mfu": flops / seconds / (args.peak_tflops * 1e12), "batch": args.batch}


def jpeg_pipeline(root: Path) -> dict:
    """Decoding + training augmentation of the JPEG folder alone, with the default workers."""
    from clpeft.streams.datasets import load_imagenet_r

    train, _, _ = load_imagenet_r(root=root, image_size=IMAGE)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         pin_memory=args.device.startswith("cuda"), drop_last=True,
                                         persistent_workers=False)
    images, start = 0, time.perf_counter()
    for x, _ in loader:
        images += len(x)
    return {"images_per_s": images / (time.perf_counter() - start), "workers": args.workers, "images": images}


if __name__ == "__main__":
    cifar = cifar_shaped(work / "cifar", 8 if args.tiny else 500, 2 if args.tiny else 100)
    jpeg_root = imagenet_r_shaped(work / "imagenet_r", args.jpeg_images, 10 if args.tiny else 200)
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "settings": vars(args), "raw_loop": raw_loop(), "runs": [run_strategy(s, cifar) for s in args.strategies],
              "jpeg_pipeline": jpeg_pipeline(jpeg_root)}
    raw = report["raw_loop"]["images_per_s"]
    print(f"raw timm fwd+bwd ({args.model}, batch {args.batch}, {args.amp}): {raw:.0f} img/s, "
          f"MFU {100 * report['raw_loop']['mfu']:.1f} %")
    print("| strategy | A_T | train img/s | ÷ raw loop | eval img/s | data | compute | eval | ckpt | other | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["runs"]:
        s, speed = r["time_share"], r["train_images_per_s"]
        train = f"{speed:.0f} | {speed / raw:.2f}" if speed else "— | —"
        print(f"| {r['strategy']} | {100 * r['final_accuracy']:.1f} | {train} | "
              f"{r['eval_images_per_s']:.0f} | {100 * s['data']:.0f} % | "
              f"{100 * s['compute']:.0f} % | {100 * s['evaluation']:.0f} % | {100 * s['checkpoint']:.0f} % | "
              f"{100 * s['other']:.0f} % | {r['wall_seconds']:.0f} |")
    jp = report["jpeg_pipeline"]
    print(f"JPEG pipeline ({jp['workers']} workers): {jp['images_per_s']:.0f} img/s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
