"""Pretrain the project's small ViT on Fashion-MNIST, so offline runs have a genuinely pretrained ViT.

Fashion-MNIST (clothing) is disjoint from the digit streams (digits, MNIST-5k) the backbone is
evaluated on. The command is deterministic for a given seed and machine; it writes the backbone
weights (safetensors, no head), their sha256 and a JSON training log.
"""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from clpeft.models.backbones import BACKBONES, create_backbone, sha256_of
from clpeft.streams.datasets import load_fashion_mnist
from clpeft.utils.io import atomic_write, atomic_write_json, atomic_write_text
from clpeft.utils.seed import seed_everything


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shift by up to ``pad`` pixels and random horizontal flip, batch-wise."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def pretrain(backbone: str = "vit_tiny_fmnist", out: str | Path | None = None, epochs: int = 8, batch_size: int = 128,
             lr: float = 2e-3, weight_decay: float = 0.05, seed: int = 0, data_root: str | None = None,
             limit: int | None = None, log=print) -> dict:
    """Train ``backbone`` from scratch with a linear head on Fashion-MNIST; save the backbone only."""
    spec = BACKBONES[backbone]
    out = Path(out) if out else Path(__file__).parent / "weights" / spec.weights.split(":", 1)[1]
    seed_everything(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, test, _ = load_fashion_mnist(root=data_root)
    x_train, y_train = train.images, torch.tensor(train.targets)
    x_test, y_test = test.images, torch.tensor(test.targets)
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    net, _ = create_backbone(backbone, pretrained=False)
    head = nn.Linear(net.num_features, 10)
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    total = epochs * steps_per_epoch
    warmup = steps_per_epoch // 2
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    )
    gen = torch.Generator().manual_seed(seed)
    history = []
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(y_train), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = (augment(x_train[idx], gen) - mean) / std
            logits = head(net(x))
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == y_train[idx]).sum().item()
        net.eval()
        with torch.no_grad():
            preds = torch.cat([head(net((x_test[j:j + 512] - mean) / std)).argmax(-1) for j in range(0, len(y_test), 512)])
        row = dict(epoch=epoch + 1, train_loss=round(loss_sum / len(y_train), 5), train_acc=round(correct / len(y_train), 5),
                   test_acc=round((preds == y_test).float().mean().item(), 5), elapsed_s=round(time.perf_counter() - start, 1))
        history.append(row)
        log(json.dumps(row))
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write(out, lambda p: save_file(state, str(p), metadata={"backbone": backbone, "seed": str(seed)}))
    digest = sha256_of(out)
    atomic_write_text(out.with_suffix(out.suffix + ".sha256"), f"{digest}  {out.name}\n")
    record = dict(
        backbone=backbone, timm_name=spec.timm_name, kwargs=spec.kwargs, data="Fashion-MNIST (60k train / 10k test)",
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed, limit=limit,
        optimizer="AdamW, cosine schedule with half-epoch warm-up, label smoothing 0.1, shift±2 + h-flip",
        params=sum(p.numel() for p in net.parameters()), sha256=digest, history=history,
        torch=torch.__version__, machine=f"{platform.machine()} {platform.processor()} {torch.get_num_threads()} threads",
        command=f"clpeft pretrain --backbone {backbone} --epochs {epochs} --batch-size {batch_size} --lr {lr} --seed {seed}",
    )
    atomic_write_json(out.with_suffix(".log.json"), record)
    return record
