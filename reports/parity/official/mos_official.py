"""MOS end to end with the official code (sun-hailong/AAAI25-MOS: models/mos.Learner, utils/inc_net.MOSNet,
backbone/vit_mos's adapter ViT and backbone/linears.CosineLinear) on the shared digits stream, on CPU, with the
shared 32-px backbone.

Shims only: `.cuda()`/`.to("cuda")` stay on the CPU; `easydict` is a dict with attribute access; get_backbone builds
the official adapter ViT at the tiny size and loads the shared weights the way its timm loader does (qkv split,
`mlp.fc*` renamed, the width MOSNet hard-codes as 768 set to 96, the head drawn as timm draws a new classifier: truncated normal, std 0.02, zero bias; only the
adapter and head train); data loaders run in the main process; the learner's top-5 accuracy is top-1 (a task has 2
classes); the data manager serves the shared stream (with `ret_data`, as `_compute_mean` asks). The task loop is the
official trainer's: incremental_train, `_eval_cnn` on the seen classes' test loader (the official evaluation, run
once per task as `eval_task` runs it: it moves the stored adapters, so it is not run twice), after_task.
Settings: the official `exps/mos_cifar.json` (SGD momentum 0.9, cosine to 0, weight decay 5e-4, reg 0.1, adapter
momentum 0.1, ensemble, alignment 30 epochs at 0.005 on full covariances) with the epochs, rate, batch and
bottleneck given below."""
import argparse
import json
import os
import random
import sys
from functools import partial

import numpy as np
import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=5)
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--bottleneck", type=int, default=16)
p.add_argument("--ca-epochs", type=int, default=30)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--out", default="/tmp/parity_mos/official.json")
args = p.parse_args()
torch.set_num_threads(args.threads)
os.environ.setdefault("TQDM_DISABLE", "1")  # the learner's progress bars

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from shared_digits import keep_cuda_on_cpu, pilot_compat, split_qkv_state  # noqa: E402

keep_cuda_on_cpu()
easydict = pilot_compat()

sys.path.insert(0, os.environ.get("MOS_OFFICIAL", "/tmp/mos"))
from backbone import vit_mos  # noqa: E402
from models import mos as official  # noqa: E402
from utils import inc_net  # noqa: E402

from pycil_style import DigitsManager  # noqa: E402

WIDTH = 96
official.num_workers = 0
official.DataLoader = lambda *a, **k: torch.utils.data.DataLoader(*a, **{**k, "num_workers": 0})


def tiny_mos_vit(cfg, pretrained=False):
    config = easydict.EasyDict(ffn_adapt=True, ffn_option="parallel", ffn_adapter_layernorm_option="none",
                               ffn_adapter_init_option="lora", ffn_adapter_scalar="0.1", ffn_num=args.bottleneck,
                               d_model=WIDTH, _device=torch.device("cpu"), adapter_momentum=cfg["adapter_momentum"],
                               vpt_on=False, vpt_num=0)
    model = vit_mos.VisionTransformer(img_size=32, patch_size=4, in_chans=1, embed_dim=WIDTH, depth=6, num_heads=3,
                                      mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                      num_classes=cfg["nb_classes"], global_pool=False, drop_path_rate=0.0,
                                      tuning_config=config)
    nn.init.trunc_normal_(model.head.weight, std=0.02)  # timm's draw of a new classifier (init_weights_vit_timm)
    nn.init.zeros_(model.head.bias)
    msg = model.load_state_dict(split_qkv_state(), strict=False)
    assert not msg.unexpected_keys, msg.unexpected_keys
    assert all("adapter" in k or k.startswith("head") for k in msg.missing_keys), msg.missing_keys
    for name, param in model.named_parameters():
        param.requires_grad = "head" in name or "adapter" in name
    return model


inc_net.get_backbone = tiny_mos_vit


class Manager(DigitsManager):
    def get_dataset(self, indices, source, mode, ret_data=False):
        split = super().get_dataset(indices, source, mode)
        split.labels = split.y.numpy()
        return (split.x, split.y, split) if ret_data else split


config = {"device": [torch.device("cpu")], "memory_size": 0, "memory_per_class": 0, "fixed_memory": False,
          "model_name": "mos", "backbone_type": "vit_base_patch16_224_mos", "init_cls": 2, "increment": 2,
          "nb_classes": 10, "tuned_epoch": args.epochs, "init_lr": args.lr, "batch_size": args.batch,
          "weight_decay": 0.0005, "min_lr": 0, "optimizer": "sgd", "scheduler": "cosine", "reinit_optimizer": True,
          "init_milestones": [10], "init_lr_decay": 0.1, "reg": 0.1, "adapter_momentum": 0.1, "ensemble": True,
          "crct_epochs": args.ca_epochs, "ca_lr": 0.005, "ca_storage_efficient_method": "covariance",
          "n_centroids": 10, "ffn_num": args.bottleneck, "seed": args.seed}
torch.manual_seed(args.seed); np.random.seed(args.seed); random.seed(args.seed)
learner = official.Learner(config)
learner.topk = 1
learner._network.backbone.out_dim = WIDTH  # MOSNet sets 768 after building the backbone
manager = Manager()
R, n = [], [int(((manager.yte // 2) == t).sum()) for t in range(5)]
for task in range(5):
    learner.incremental_train(manager)
    y_pred, y_true = learner._eval_cnn(learner.test_loader)
    pred, true = torch.as_tensor(y_pred[:, 0]), torch.as_tensor(y_true)
    R.append([float((pred[true // 2 == t] == true[true // 2 == t]).float().mean()) if t <= task else 0.0
              for t in range(5)])
    learner.after_task()
    print(f"after task {task}: " + " ".join(f"{a:.3f}" for a in R[-1][: task + 1]), flush=True)
result = {"side": "official", "seed": args.seed, "accuracy_matrix": R,
          "final_accuracy": float(np.dot(R[-1], n) / sum(n)), "test_samples": n, "threads": torch.get_num_threads(),
          "settings": {k: v for k, v in vars(args).items() if k not in ("out", "seed")}}
print(json.dumps({k: result[k] for k in ("side", "seed", "final_accuracy")}))
os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
