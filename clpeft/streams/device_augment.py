"""Image augmentation of whole batches on the device, for data sets held in memory as uint8.

Per-sample PIL transforms in worker processes cannot feed a GPU that trains a ViT-B/16 at thousands of images
a second; a CIFAR-sized data set fits on the device as uint8 (150 MB), and a batch's random resized crops,
flips and resizing are one ``grid_sample``. The crops follow torchvision's ``RandomResizedCrop`` (area share
U(0.08, 1), log-uniform aspect ratio in [3/4, 4/3], a box inside the image, otherwise the whole image), drawn
from a seeded generator on the device, so runs stay reproducible.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _grid(boxes: torch.Tensor, flip: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Sampling grids [B, size, size, 2] mapping output pixels into boxes (x0, y0, w, h) in input pixels."""
    B = boxes.shape[0]
    steps = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    x0, y0, w, h = boxes.unbind(1)
    xs = x0[:, None] + steps[None] * w[:, None]                       # [B, size] input pixel coordinates
    ys = y0[:, None] + steps[None] * h[:, None]
    xs = torch.where(flip[:, None], x0[:, None] + w[:, None] - (xs - x0[:, None]), xs)
    gx = xs / width * 2 - 1                                           # align_corners=False normalisation
    gy = ys / height * 2 - 1
    return torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1).reshape(B, size, size, 2)


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                        scale: tuple = (0.08, 1.0), ratio: tuple = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """uint8 [B, C, H, W] → float [B, C, size, size] in [0, 1]: a random box per sample, resized, maybe flipped."""
    B, _, H, W = images.shape
    dev = images.device
    area = H * W * torch.empty(B, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(B, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).round()
    h = torch.sqrt(area / r).round()
    fits = (w <= W) & (h <= H) & (w > 0) & (h > 0)
    w = torch.where(fits, w, torch.full_like(w, W))                   # torchvision falls back to the whole image
    h = torch.where(fits, h, torch.full_like(h, H))
    x0 = torch.floor(torch.rand(B, device=dev, generator=generator) * (W - w + 1))
    y0 = torch.floor(torch.rand(B, device=dev, generator=generator) * (H - h + 1))
    flips = (torch.rand(B, device=dev, generator=generator) < 0.5) if flip else torch.zeros(B, dtype=torch.bool, device=dev)
    grid = _grid(torch.stack([x0, y0, w, h], 1), flips, size, H, W)
    return F.grid_sample(images.float() / 255.0, grid, mode="bilinear", padding_mode="border", align_corners=False)


def center_crop_resize(images: torch.Tensor, size: int, crop_fraction: float = 224 / 256) -> torch.Tensor:
    """uint8 [B, C, H, W] → float in [0, 1]: the central ``crop_fraction`` of the image resized to ``size``
    (what Resize(size/crop_fraction) + CenterCrop(size) does to a square image)."""
    B, _, H, W = images.shape
    w, h = W * crop_fraction, H * crop_fraction
    boxes = torch.tensor([[(W - w) / 2, (H - h) / 2, w, h]], device=images.device).expand(B, 4)
    grid = _grid(boxes, torch.zeros(B, dtype=torch.bool, device=images.device), size, H, W)
    return F.grid_sample(images.float() / 255.0, grid, mode="bilinear", padding_mode="border", align_corners=False)
