"""The GPU pipeline options, checked on the CPU with small shapes: batched on-device augmentation, loader
workers, fused optimizers, compilation; the benchmark script runs end to end."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clpeft.config import resolve
from clpeft.run import run
from clpeft.streams.device_augment import center_crop_resize, random_resized_crop

ROOT = Path(__file__).resolve().parent.parent


def test_random_resized_crops_are_seeded_per_sample_and_the_whole_image_is_a_plain_resize():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    a = random_resized_crop(images, 48, torch.Generator().manual_seed(1))
    b = random_resized_crop(images, 48, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 48, 48) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a[0], random_resized_crop(images, 48, torch.Generator().manual_seed(2))[0])
    whole = random_resized_crop(images, 48, torch.Generator().manual_seed(1), scale=(1.0, 1.0), ratio=(1.0, 1.0),
                                flip=False)
    plain = F.interpolate(images.float() / 255, size=(48, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(whole, plain, atol=1e-5)
    centre = center_crop_resize(images, 32, crop_fraction=1.0)
    assert torch.allclose(centre, images.float() / 255, atol=1e-5)


def fake_cifar(root: Path, per_class: int = 6) -> Path:
    """A tiny CIFAR-100 in torchvision's layout (pickled dicts), 100 classes."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):
        labels = np.repeat(np.arange(100), n)
        data = (g.integers(0, 256, (len(labels), 3072)) // 4 + labels[:, None] * 1).astype(np.uint8)
        with open(folder / split, "wb") as fh:
            pickle.dump({"data": data, "fine_labels": labels.tolist()}, fh)
    return root


@pytest.fixture
def cifar_scenario(tmp_path, fast_scenario):
    fast_scenario["stream"] = {"dataset": "cifar100", "root": str(fake_cifar(tmp_path / "data")), "n_experiences": 2,
                               "image_size": 32, "device_augment": True}
    fast_scenario["model"] = {"backbone": "vit_tiny_patch16_224", "pretrained": False,
                              "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 2}}
    fast_scenario["train"].update(epochs=1, batch_size=64)
    return fast_scenario


def test_device_augmentation_trains_reproducibly_and_keeps_images_uint8_in_memory(cifar_scenario):
    from clpeft.run import build

    config = resolve(cifar_scenario, strategy="finetune", pet="adapter", overrides={"pet": {"blocks": [0, 1]}})
    built = build(config)
    train = built.stream.train_stream[0].dataset
    assert built.stream.in_memory and built.strategy.batch_augment is not None
    assert train[0][0].dtype == torch.uint8
    a, b = run(config), run(config)
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["training"] == b["training"]


def test_loader_workers_fused_optimizer_and_compilation_leave_the_numbers_alone(fast_scenario):
    fast_scenario["model"] = {"backbone": "lenet", "pretrained": False}
    plain = run(resolve(fast_scenario, strategy="finetune"))
    options = resolve(fast_scenario, strategy="finetune",
                      overrides={"train": {"num_workers": 2, "fused_optimizer": True, "compile": "eager"}})
    tuned = run(options)
    for row_a, row_b in zip(plain["accuracy_matrix"], tuned["accuracy_matrix"]):
        assert np.allclose(row_a, row_b, atol=0.02)  # fused kernels sum in another order; nothing else changes


def test_the_gpu_benchmark_runs_end_to_end_on_tiny_shapes(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--tiny", "--device", "cpu",
                           "--work", str(tmp_path / "work"), "--json", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    speeds = {run_["strategy"]: run_["train_images_per_s"] for run_ in result["runs"]}
    assert speeds["lae"] > 0 and speeds["finetune"] > 0 and speeds["prototype"] is None  # prototype takes no step
    for run_ in result["runs"]:
        assert run_["eval_images_per_s"] > 0
        shares = run_["time_share"]
        assert abs(sum(shares.values()) - 1.0) < 0.05
    assert result["raw_loop"]["images_per_s"] > 0 and result["jpeg_pipeline"]["images_per_s"] > 0
