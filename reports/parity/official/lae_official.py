"""LAE end to end with the official code (gqk/LAE: main.MyModule and MyDataModule on libml's Trainer, i.e. Lightning
Fabric, with its ViT, PETs, head, optimiser, EMA and ensemble) on the shared digits stream, on CPU, with the shared
32-px backbone. Runs in the official environment (Python 3.10 and the repository's pins: lae_requirements.txt).

Shims only: the "ViT-B_16" entry of libml's backbone table builds libml's VisionTransformer at the tiny size and
loads the shared weights (same keys as timm's); the data module serves the shared stream from memory (continuum
InMemoryDataset of tensors, no augmentation) instead of downloading CIFAR-100; Fabric runs on the CPU with no
loader workers. The configuration is the official one (config/base/cifar100_order1.yaml + config/vit_<pet>.yaml)
with 2 classes per task. Each task's last evaluation (libml's "Global Per Task Accs": the ensemble's predictions
over all seen classes) is one row of the accuracy matrix."""
import argparse
import json
import sys
import tempfile
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--pet", choices=["adapter", "lora", "prefix"], default="adapter")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out")
args = p.parse_args()
sys.argv = sys.argv[:1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
sys.path.insert(0, "/tmp/lae")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from absl import flags  # noqa: E402
from continuum.datasets import InMemoryDataset  # noqa: E402
from continuum.tasks import TaskType  # noqa: E402
from omegaconf import OmegaConf as oc  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import main as official  # noqa: E402 - the official entry point (its module, data module and config classes)
from libml import model as libml_model  # noqa: E402
from libml.core.trainer import Trainer  # noqa: E402
from libml.model.backbone import vit  # noqa: E402
from shared_digits import digits32  # noqa: E402

flags.FLAGS(sys.argv)  # the official App parses its flags (all defaults here: no --debug)


def tiny_vit(**_):
    model = vit.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=96, depth=6, num_heads=3)
    state = {k: v for k, v in load_file("/tmp/parity_coda/vit32.safetensors").items() if not k.startswith("head")}
    model.load_state_dict(state)
    return model


libml_model._BACKBONE["ViT-B_16"] = tiny_vit
xtr, ytr, xte, yte = digits32()


class SharedDigits(official.MyDataModule):
    def configure_dataset(self, train: bool):
        x, y = (xtr, ytr) if train else (xte, yte)
        return InMemoryDataset(x.numpy(), y.numpy(), data_type=TaskType.TENSOR)

    def train_transform(self):
        return None

    def val_transform(self):
        return None


def load(name):
    cfg = oc.load(f"/tmp/lae/config/{name}")
    cfg.pop("extends", None)
    return cfg


cfg = oc.merge(oc.structured(official.MyConf), load("base/cifar100_order1.yaml"), load(f"vit_{args.pet}.yaml"))
cfg.accelerator, cfg.seed_everything = "cpu", args.seed
cfg.data.num_increment_classes = 2
cfg.data.dataloader.num_workers, cfg.data.dataloader.pin_memory = 0, False
cfg.module.num_epochs = args.epochs

R = []
run_task = Trainer.run_task


def recorded(self, mode="train"):
    run_task(self, mode)
    R.append([float(a.compute()) for a in self.module.val_task_accs])
    print(f"after task {len(R) - 1}: " + " ".join(f"{v:.3f}" for v in R[-1]), flush=True)


Trainer.run_task = recorded
with tempfile.TemporaryDirectory() as logs:
    trainer = Trainer(cfg, logs)
    trainer.attach(official.MyModule(cfg.module), SharedDigits(cfg.data))
    trainer.run(mode="train")

n = [int(((yte // 2) == k).sum()) for k in range(5)]
R = [row + [0.0] * (5 - len(row)) for row in R]
result = {"method": "lae", "pet": args.pet, "seed": args.seed, "accuracy_matrix": R,
          "final_accuracy": float(np.dot(R[-1], n) / sum(n)), "test_samples": n, "settings": vars(args),
          "threads": torch.get_num_threads(), "versions": {"torch": torch.__version__, "python": sys.version.split()[0]}}
print(json.dumps({k: result[k] for k in ("pet", "seed", "final_accuracy")}))
if args.out:
    json.dump(result, open(args.out, "w"), indent=1)
